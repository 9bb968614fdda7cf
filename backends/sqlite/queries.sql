-- Every SQL statement of the SQLite backend, by name (backends.sql.queries format).
-- Parameters are positional (?, ?NNN); instants are epoch microseconds (UTC).
-- Queries on one queue's table say {table}; they are rendered once per queue.

-- ---------------------------------------------------------------- migrations
-- name: migrations_create
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  INTEGER NOT NULL
)

-- name: migrations_applied
SELECT version FROM schema_migrations ORDER BY version

-- name: migrations_record
INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)

-- ---------------------------------------------------------------- executions
-- name: execution_get
SELECT data FROM executions WHERE id = ?

-- name: execution_save
-- An update sets only what changes while an execution runs (its id, namespace, flow
-- and start date never do): SQLite rewrites the index entries of every column SET,
-- and each index page it touches is one more page in the WAL at commit.
INSERT INTO executions (id, namespace, flow_id, state, start_date, end_date, data, labels)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state,
    end_date = excluded.end_date,
    data = excluded.data,
    labels = excluded.labels

-- name: execution_delete
DELETE FROM executions WHERE id = ? RETURNING id

-- name: execution_search
-- ?1 namespace, ?2 flow_id, ?3 JSON array of states (each may be NULL: no filter),
-- ?4 limit, ?5 offset. Newest first, walking the start date index.
SELECT data FROM executions
WHERE (?1 IS NULL OR namespace = ?1)
  AND (?2 IS NULL OR flow_id = ?2)
  AND (?3 IS NULL OR state IN (SELECT value FROM json_each(?3)))
ORDER BY start_date DESC, id DESC
LIMIT ?4 OFFSET ?5

-- name: execution_search_namespace
-- execution_search with a namespace (and no flow): its own index range
SELECT data FROM executions
WHERE namespace = ?1
  AND (?3 IS NULL OR state IN (SELECT value FROM json_each(?3)))
ORDER BY start_date DESC, id DESC
LIMIT ?4 OFFSET ?5

-- name: execution_search_flow
-- execution_search with a namespace and a flow: its own index range
SELECT data FROM executions
WHERE namespace = ?1 AND flow_id = ?2
  AND (?3 IS NULL OR state IN (SELECT value FROM json_each(?3)))
ORDER BY start_date DESC, id DESC
LIMIT ?4 OFFSET ?5

-- name: execution_count_in_states
SELECT COUNT(*) FROM executions
WHERE namespace = ? AND flow_id = ? AND state IN (SELECT value FROM json_each(?))

-- name: execution_oldest_in_state
SELECT id FROM executions
WHERE namespace = ? AND flow_id = ? AND state = ?
ORDER BY start_date, id
LIMIT 1

-- ---------------------------------------------------------------- flows
-- name: flow_latest
SELECT namespace, flow_id, revision, source, updated, deleted FROM flows
WHERE namespace = ? AND flow_id = ?
ORDER BY revision DESC
LIMIT 1

-- name: flow_revision
SELECT namespace, flow_id, revision, source, updated, deleted FROM flows
WHERE namespace = ? AND flow_id = ? AND revision = ?

-- name: flow_revisions
SELECT namespace, flow_id, revision, source, updated, deleted FROM flows
WHERE namespace = ? AND flow_id = ?
ORDER BY revision

-- name: flow_list
-- ?1 namespace (NULL: every namespace)
SELECT f.namespace, f.flow_id, f.revision, f.source, f.updated, f.deleted
FROM flows AS f
JOIN (
    SELECT namespace, flow_id, MAX(revision) AS revision FROM flows
    WHERE ?1 IS NULL OR namespace = ?1
    GROUP BY namespace, flow_id
) AS latest USING (namespace, flow_id, revision)
WHERE f.deleted = 0
ORDER BY f.namespace, f.flow_id

-- name: flow_insert
INSERT INTO flows (namespace, flow_id, revision, source, updated, deleted)
VALUES (?, ?, ?, ?, ?, ?)

-- name: flow_set_deleted
-- deletion is a flag of the flow: every revision reads deleted until a new deploy
UPDATE flows SET deleted = ?3 WHERE namespace = ?1 AND flow_id = ?2 AND deleted <> ?3

-- ---------------------------------------------------------------- logs
-- name: log_last_seqs
-- ?1 JSON array of execution ids
SELECT execution_id, MAX(seq) FROM logs
WHERE execution_id IN (SELECT value FROM json_each(?1))
GROUP BY execution_id

-- name: log_insert
INSERT INTO logs (execution_id, seq, namespace, flow_id, timestamp, level, level_number,
                  message, task_run_id, task_id, attempt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: log_query
-- ?1 execution_id, ?2 after seq, ?3 task_run_id or NULL, ?4 minimum level number, ?5 limit
SELECT execution_id, seq, namespace, flow_id, timestamp, level, message, task_run_id,
       task_id, attempt
FROM logs
WHERE execution_id = ?1 AND seq > ?2
  AND (?3 IS NULL OR task_run_id = ?3)
  AND level_number >= ?4
ORDER BY seq
LIMIT ?5

-- ---------------------------------------------------------------- triggers
-- name: trigger_get
SELECT namespace, flow_id, trigger_id, next_date, last_date, disabled, flow_revision, data
FROM triggers
WHERE namespace = ? AND flow_id = ? AND trigger_id = ?

-- name: trigger_save
INSERT OR REPLACE INTO triggers
    (namespace, flow_id, trigger_id, next_date, last_date, disabled, flow_revision, data)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)

-- name: trigger_list
SELECT namespace, flow_id, trigger_id, next_date, last_date, disabled, flow_revision, data
FROM triggers
WHERE ?1 IS NULL OR namespace = ?1
ORDER BY namespace, flow_id, trigger_id

-- name: trigger_delete
DELETE FROM triggers WHERE namespace = ? AND flow_id = ? AND trigger_id = ? RETURNING 1

-- ---------------------------------------------------------------- KV
-- name: kv_get
-- ?3 now: expired entries are not returned
SELECT namespace, key, value, updated, expires_at FROM kv
WHERE namespace = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)

-- name: kv_set
INSERT OR REPLACE INTO kv (namespace, key, value, updated, expires_at) VALUES (?, ?, ?, ?, ?)

-- name: kv_delete
-- returns the expiry: deleting an expired entry reports nothing was there
-- (computed by the caller: SQLite 3.40 mis-evaluates "expires_at IS NULL OR ..." here)
DELETE FROM kv WHERE namespace = ? AND key = ? RETURNING expires_at

-- name: kv_list
SELECT namespace, key, value, updated, expires_at FROM kv
WHERE namespace = ?1 AND (expires_at IS NULL OR expires_at > ?2)
ORDER BY key

-- ---------------------------------------------------------------- kills
-- name: kill_request
INSERT OR IGNORE INTO kills (task_run_id, requested_at) VALUES (?, ?)

-- name: kill_requested
SELECT task_run_id FROM kills WHERE task_run_id IN (SELECT value FROM json_each(?))

-- name: kill_clear
DELETE FROM kills WHERE task_run_id IN (SELECT value FROM json_each(?))

-- ---------------------------------------------------------------- services
-- name: service_heartbeat
INSERT OR REPLACE INTO services (id, kind, heartbeat, data) VALUES (?, ?, ?, ?)

-- name: service_list
SELECT data FROM services ORDER BY id

-- name: service_remove
DELETE FROM services WHERE id = ?

-- ---------------------------------------------------------------- leader lock
-- name: leader_acquire
-- ?1 name, ?2 holder, ?3 expires_at, ?4 now: take a free or expired lock, renew our own
INSERT INTO leader_locks (name, holder, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leader_locks.holder = excluded.holder OR leader_locks.expires_at <= ?4
RETURNING holder

-- name: leader_release
DELETE FROM leader_locks WHERE name = ? AND holder = ?

-- ---------------------------------------------------------------- queues
-- name: queue_tables
SELECT queue, table_name FROM registered_queues

-- name: queue_register
-- ?1 queue, ?2 table; numbered in creation order
INSERT INTO registered_queues (queue, table_name, ordinal)
SELECT ?1, ?2, (SELECT COALESCE(MAX(ordinal), 0) + 1 FROM registered_queues)
WHERE NOT EXISTS (SELECT 1 FROM registered_queues WHERE queue = ?1)
RETURNING ordinal

-- name: queue_seed_ids
-- ?1 table, ?2 first id minus one: each queue numbers its messages in its own range,
-- so an id names one message in the whole database (an ack sent to the wrong queue
-- deletes nothing)
INSERT INTO sqlite_sequence (name, seq)
SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)

-- name: queue_create_table
-- AUTOINCREMENT: ids are never reused once a queue empties, so a late ack of an
-- old id can never delete a newer message.
CREATE TABLE IF NOT EXISTS {table} (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT,
    payload       BLOB NOT NULL,
    available_at  INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease_owner   TEXT,
    lease_until   INTEGER
)

-- Few indexes on purpose: each one a message goes in or out of is one more page
-- written at commit. Leased messages are few (in flight), so lease queries scan them.

-- name: queue_create_claim_index
-- claims walk the messages not leased in id order, skipping the leased ones for free
CREATE INDEX IF NOT EXISTS idx_{table}_claim ON {table} (id, available_at)
WHERE lease_until IS NULL

-- name: queue_create_key_index
-- per-key exclusivity: is a message with this key leased?
CREATE INDEX IF NOT EXISTS idx_{table}_key ON {table} (key, id) WHERE key IS NOT NULL

-- name: queue_create_lease_index
-- the leased messages: expired leases, a dead consumer's leases
CREATE INDEX IF NOT EXISTS idx_{table}_lease ON {table} (lease_until, lease_owner)
WHERE lease_until IS NOT NULL

-- name: queue_publish
INSERT INTO {table} (key, payload, available_at) VALUES (?, ?, ?)

-- name: queue_claim
-- ?1 consumer, ?2 lease deadline, ?3 now, ?4 limit. Oldest first; a keyed message
-- waits while any message with its key is leased. A message not yet visible (a
-- delayed wake-up) does not hold its key: later events of the execution go first.
UPDATE {table} SET lease_owner = ?1, lease_until = ?2
WHERE id IN (
    SELECT m.id FROM {table} AS m
    WHERE m.lease_until IS NULL AND m.available_at <= ?3
      AND (m.key IS NULL OR NOT EXISTS (
          SELECT 1 FROM {table} AS o
          WHERE o.key = m.key AND o.lease_until IS NOT NULL))
    ORDER BY m.id
    LIMIT ?4
)
RETURNING id, key, payload, attempts

-- name: queue_ack
-- ?1 JSON array of ids; returns the keys, to wake consumers a key was holding back
DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?1)) RETURNING key

-- name: queue_nack
-- ?1 JSON array of ids, ?2 when they become visible again
UPDATE {table}
SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1, available_at = ?2
WHERE id IN (SELECT value FROM json_each(?1)) AND lease_until IS NOT NULL

-- name: queue_requeue_consumer
UPDATE {table} SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1
WHERE lease_until IS NOT NULL AND lease_owner = ?

-- name: queue_requeue_expired
UPDATE {table} SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1
WHERE lease_until IS NOT NULL AND lease_until <= ?

-- name: queue_depth
SELECT COUNT(*) FROM {table}

-- name: queue_next_available
-- the earliest visibility among messages a claim could take once visible (a keyed
-- message held by a leased one waits for an ack or nack, which wakes consumers)
-- (scans the messages not leased: called by idle consumers only)
SELECT MIN(m.available_at) FROM {table} AS m
WHERE m.lease_until IS NULL
  AND (m.key IS NULL OR NOT EXISTS (
      SELECT 1 FROM {table} AS o WHERE o.key = m.key AND o.lease_until IS NOT NULL))
