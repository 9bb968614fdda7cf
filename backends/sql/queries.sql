-- The statements every SQL dialect runs word for word (backends.sql.queries format).
-- Written with numbered parameters $1, $2, ..., each used once and in order: a dialect
-- translates them to its own style at import (backends/sql/dialect.py). Instants are
-- epoch microseconds (UTC); booleans are bound as Python bools. Statements a dialect
-- spells differently (lists, upserts, locks, RETURNING) are in its own queries.sql.
-- "key" is quoted: it is a reserved word in MySQL (which runs with ANSI_QUOTES).

-- ---------------------------------------------------------------- migrations
-- name: migrations_create
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        VARCHAR(200) NOT NULL,
    applied_at  BIGINT NOT NULL
)

-- name: migrations_applied
SELECT version FROM schema_migrations ORDER BY version

-- name: migrations_record
INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)

-- ---------------------------------------------------------------- executions
-- name: execution_get
SELECT data FROM executions WHERE id = $1

-- name: execution_delete
DELETE FROM executions WHERE id = $1

-- ---------------------------------------------------------------- flows
-- name: flow_latest
SELECT namespace, flow_id, revision, source, updated, deleted FROM flows
WHERE namespace = $1 AND flow_id = $2
ORDER BY revision DESC
LIMIT 1

-- name: flow_revision
SELECT namespace, flow_id, revision, source, updated, deleted FROM flows
WHERE namespace = $1 AND flow_id = $2 AND revision = $3

-- name: flow_revisions
SELECT namespace, flow_id, revision, source, updated, deleted FROM flows
WHERE namespace = $1 AND flow_id = $2
ORDER BY revision

-- name: flow_list
SELECT f.namespace, f.flow_id, f.revision, f.source, f.updated, f.deleted
FROM flows AS f
JOIN (
    SELECT namespace, flow_id, MAX(revision) AS revision FROM flows
    GROUP BY namespace, flow_id
) AS latest ON latest.namespace = f.namespace AND latest.flow_id = f.flow_id
              AND latest.revision = f.revision
WHERE NOT f.deleted
ORDER BY f.namespace, f.flow_id

-- name: flow_list_namespace
SELECT f.namespace, f.flow_id, f.revision, f.source, f.updated, f.deleted
FROM flows AS f
JOIN (
    SELECT namespace, flow_id, MAX(revision) AS revision FROM flows
    WHERE namespace = $1
    GROUP BY namespace, flow_id
) AS latest ON latest.namespace = f.namespace AND latest.flow_id = f.flow_id
              AND latest.revision = f.revision
WHERE NOT f.deleted
ORDER BY f.namespace, f.flow_id

-- name: flow_insert
INSERT INTO flows (namespace, flow_id, revision, source, updated, deleted)
VALUES ($1, $2, $3, $4, $5, $6)

-- name: flow_set_deleted
-- $1 the flag, $2 namespace, $3 flow_id, $4 the flag again. Deletion is a flag of the
-- flow: every revision reads deleted until a new deploy.
UPDATE flows SET deleted = $1 WHERE namespace = $2 AND flow_id = $3 AND deleted <> $4

-- ---------------------------------------------------------------- logs
-- name: log_query
-- $1 execution_id, $2 after seq, $3 minimum level number, $4 limit
SELECT execution_id, seq, namespace, flow_id, timestamp, level, message, task_run_id,
       task_id, attempt
FROM logs
WHERE execution_id = $1 AND seq > $2 AND level_number >= $3
ORDER BY seq
LIMIT $4

-- name: log_query_task
-- $1 execution_id, $2 after seq, $3 task_run_id, $4 minimum level number, $5 limit
SELECT execution_id, seq, namespace, flow_id, timestamp, level, message, task_run_id,
       task_id, attempt
FROM logs
WHERE execution_id = $1 AND seq > $2 AND task_run_id = $3 AND level_number >= $4
ORDER BY seq
LIMIT $5

-- ---------------------------------------------------------------- triggers
-- name: trigger_get
SELECT namespace, flow_id, trigger_id, next_date, last_date, disabled, flow_revision, data
FROM triggers
WHERE namespace = $1 AND flow_id = $2 AND trigger_id = $3

-- name: trigger_list
SELECT namespace, flow_id, trigger_id, next_date, last_date, disabled, flow_revision, data
FROM triggers
ORDER BY namespace, flow_id, trigger_id

-- name: trigger_list_namespace
SELECT namespace, flow_id, trigger_id, next_date, last_date, disabled, flow_revision, data
FROM triggers
WHERE namespace = $1
ORDER BY namespace, flow_id, trigger_id

-- name: trigger_delete
DELETE FROM triggers WHERE namespace = $1 AND flow_id = $2 AND trigger_id = $3

-- ---------------------------------------------------------------- KV
-- name: kv_get
-- $3 now: expired entries are not returned
SELECT namespace, "key", value, updated, expires_at FROM kv
WHERE namespace = $1 AND "key" = $2 AND (expires_at IS NULL OR expires_at > $3)

-- name: kv_delete_alive
-- $3 now: how many rows it deleted tells whether the entry was there and alive
DELETE FROM kv WHERE namespace = $1 AND "key" = $2 AND (expires_at IS NULL OR expires_at > $3)

-- name: kv_delete
-- after kv_delete_alive: an expired entry goes too
DELETE FROM kv WHERE namespace = $1 AND "key" = $2

-- name: kv_list
SELECT namespace, "key", value, updated, expires_at FROM kv
WHERE namespace = $1 AND (expires_at IS NULL OR expires_at > $2)
ORDER BY "key"

-- ---------------------------------------------------------------- services
-- name: service_list
SELECT data FROM services ORDER BY id

-- name: service_remove
DELETE FROM services WHERE id = $1

-- ---------------------------------------------------------------- leader lock
-- name: leader_release
DELETE FROM leader_locks WHERE name = $1 AND holder = $2

-- ---------------------------------------------------------------- queues
-- name: queue_tables
SELECT queue, table_name FROM registered_queues
