-- The statements SQLite spells its own way, by name (backends.sql.queries format);
-- those every dialect shares are in backends/sql/queries.sql.
-- Parameters are positional (?, ?NNN); instants are epoch microseconds (UTC).
-- Queries on one queue's table say {table}; they are rendered once per queue.

-- ---------------------------------------------------------------- executions
-- name: execution_get_for_update
-- BEGIN IMMEDIATE holds the database's write lock already: nobody changes the row
-- before the transaction ends
SELECT data FROM executions WHERE id = ?

-- name: execution_count_in_states
SELECT COUNT(*) FROM executions
WHERE namespace = ? AND flow_id = ? AND state IN (SELECT value FROM json_each(?))

-- name: execution_oldest_in_state
SELECT id FROM executions
WHERE namespace = ? AND flow_id = ? AND state = ?
ORDER BY start_date, id
LIMIT 1

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

-- ---------------------------------------------------------------- kills

-- name: kill_request
INSERT OR IGNORE INTO kills (task_run_id, requested_at) VALUES (?, ?)

-- name: kill_requested
SELECT task_run_id FROM kills WHERE task_run_id IN (SELECT value FROM json_each(?))

-- name: kill_clear
DELETE FROM kills WHERE task_run_id IN (SELECT value FROM json_each(?))

-- ---------------------------------------------------------------- leader lock

-- name: leader_acquire
-- ?1 name, ?2 holder, ?3 expires_at, ?4 now: take a free or expired lock, renew our own
INSERT INTO leader_locks (name, holder, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leader_locks.holder = excluded.holder OR leader_locks.expires_at <= ?4
RETURNING holder

-- ---------------------------------------------------------------- queues

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
