-- Searches over every execution's logs, newest first (backends/sql/log_search.py):
-- the newest entries of all, and those of a flow or of a namespace (a range on
-- namespace). An execution's entries keep using the primary key.
-- MySQL 8 has no CREATE INDEX IF NOT EXISTS: the ALTER (one statement, both indexes
-- or neither) runs only when the first index is missing, so the script can run again
-- after a crash between the ALTER and the migration's record.
SET @log_search_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.statistics
     WHERE table_schema = DATABASE() AND table_name = 'logs' AND index_name = 'logs_time') = 0,
    'ALTER TABLE logs ADD INDEX logs_time (timestamp, execution_id, seq),
                      ADD INDEX logs_flow_time (namespace, flow_id, timestamp)',
    'DO 0');
PREPARE log_search_stmt FROM @log_search_ddl;
EXECUTE log_search_stmt;
DEALLOCATE PREPARE log_search_stmt;
