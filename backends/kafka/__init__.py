"""The Kafka backend (issue 22). Today: the test brokers (``testing``) only."""
