-- Searches over every execution's logs, newest first (backends/sql/log_search.py):
-- the newest entries of all, and those of a flow or of a namespace (a range on
-- namespace). An execution's entries keep using the primary key.
CREATE INDEX logs_time ON logs (timestamp, execution_id, seq);
CREATE INDEX logs_flow_time ON logs (namespace, flow_id, timestamp);
