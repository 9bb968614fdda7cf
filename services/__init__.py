"""The server components (executor, worker, scheduler, indexer, webserver), each an actor."""
