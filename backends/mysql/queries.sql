-- The statements MySQL / MariaDB spells its own way, by name (backends.sql.queries
-- format); those every dialect shares are in backends/sql/queries.sql.
-- Parameters are %s, in order (PyMySQL interpolates them client side; a tuple binds
-- as a parenthesised list, for IN). Instants are epoch microseconds (UTC).
-- Queries on one queue's table say {table}; {rows} is a multi-row VALUES list.
-- Connections run with ANSI_QUOTES: "key" or `key` both name the column.

-- ---------------------------------------------------------------- migrations
-- name: migrations_lock
-- server-wide named lock, held by the migrating connection: $1 name, $2 seconds
SELECT GET_LOCK(%s, %s)

-- name: migrations_unlock
SELECT RELEASE_LOCK(%s)

-- name: server_version
SELECT VERSION()

-- ---------------------------------------------------------------- executions
-- name: execution_get_for_update
SELECT data FROM executions WHERE id = %s FOR UPDATE

-- name: execution_count_in_states
SELECT COUNT(*) FROM executions WHERE namespace = %s AND flow_id = %s AND state IN %s

-- name: execution_oldest_in_state
SELECT id FROM executions
WHERE namespace = %s AND flow_id = %s AND state = %s
ORDER BY start_date, id
LIMIT 1

-- ---------------------------------------------------------------- flows
-- name: flow_lock
-- one deploy of a flow at a time (a new flow has no row to lock yet); a named lock,
-- released when the transaction ends: name, seconds to wait (1 got it, 0 timed out)
SELECT GET_LOCK(%s, %s)

-- ---------------------------------------------------------------- logs
-- name: log_bump_seqs
-- one row per execution, (execution_id, count), in execution id order (two appends
-- lock the counters in the same order: no deadlock); the row locks number concurrent
-- appends of one execution one after the other, until the transaction ends
INSERT INTO log_seqs (execution_id, last_seq) VALUES {rows}
ON DUPLICATE KEY UPDATE last_seq = last_seq + VALUES(last_seq)

-- name: log_last_seqs
SELECT execution_id, last_seq FROM log_seqs WHERE execution_id IN %s

-- name: log_insert
INSERT INTO logs (execution_id, seq, namespace, flow_id, timestamp, level, level_number,
                  message, task_run_id, task_id, attempt)
VALUES {rows}

-- ---------------------------------------------------------------- kills
-- name: kill_request
INSERT INTO kills (task_run_id, requested_at) VALUES {rows}
ON DUPLICATE KEY UPDATE task_run_id = task_run_id

-- name: kill_requested
SELECT task_run_id FROM kills WHERE task_run_id IN %s

-- name: kill_clear
DELETE FROM kills WHERE task_run_id IN %s

-- ---------------------------------------------------------------- leader lock
-- name: leader_renew
-- holder, expires_at, name, holder, now: renew our own lease, or take an expired one
UPDATE leader_locks SET holder = %s, expires_at = %s
WHERE name = %s AND (holder = %s OR expires_at <= %s)

-- name: leader_insert
-- name, holder, expires_at: take a lease nobody ever held (0 rows: somebody does)
INSERT IGNORE INTO leader_locks (name, holder, expires_at) VALUES (%s, %s, %s)

-- name: leader_take
-- the lease whatever its state: the caller holds the name's GET_LOCK, so the previous
-- holder's session is gone
INSERT INTO leader_locks (name, holder, expires_at) VALUES (%s, %s, %s)
ON DUPLICATE KEY UPDATE holder = VALUES(holder), expires_at = VALUES(expires_at)

-- name: leader_try_lock
SELECT GET_LOCK(%s, 0)

-- name: leader_unlock
SELECT RELEASE_LOCK(%s)

-- ---------------------------------------------------------------- queues
-- name: queue_table
SELECT table_name FROM registered_queues WHERE queue = %s

-- name: queue_next_ordinal
SELECT COALESCE(MAX(ordinal), 0) + 1 FROM registered_queues

-- name: queue_create_lock
-- one creator of queue tables at a time: name, seconds to wait (1 got it, 0 timed out)
SELECT GET_LOCK(%s, %s)

-- name: queue_create_unlock
SELECT RELEASE_LOCK(%s)

-- name: queue_register
INSERT IGNORE INTO registered_queues (queue, table_name, ordinal) VALUES (%s, %s, %s)

-- name: queue_create_table
-- {first_id}: the queue's range of ids. Indexes: the claim walks the messages not
-- leased in id order ((lease_until, id): the NULLs first, by id); the key index answers
-- "is a message of this key leased?"; leased messages are few (in flight).
CREATE TABLE IF NOT EXISTS {table} (
    id            BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    `key`         VARCHAR(255) NULL,
    payload       LONGBLOB NOT NULL,
    available_at  BIGINT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease_owner   VARCHAR(255) NULL,
    lease_until   BIGINT NULL,
    KEY {table}_claim (lease_until, id),
    KEY {table}_keys (`key`, lease_until, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin AUTO_INCREMENT = {first_id}

-- name: queue_publish
-- rows of (key, payload, visible from), in publication order: ids follow it
INSERT INTO {table} (`key`, payload, available_at) VALUES {rows}

-- name: queue_claim
-- now, limit. Oldest first; a keyed message waits while any message with its key is
-- leased, and a delayed one does not hold its key. SKIP LOCKED passes over rows another
-- transaction is claiming; the NOT EXISTS subquery is a plain (non-locking) read of
-- what is committed. Keys need more than row locks: see backends/mysql/queues.py.
SELECT m.id, m.`key`, m.payload, m.attempts FROM {table} AS m
WHERE m.lease_until IS NULL AND m.available_at <= %s
  AND (m.`key` IS NULL OR NOT EXISTS (
      SELECT 1 FROM {table} AS o WHERE o.`key` = m.`key` AND o.lease_until IS NOT NULL))
ORDER BY m.id
LIMIT %s
FOR UPDATE SKIP LOCKED

-- name: queue_lease
-- consumer, deadline, ids
UPDATE {table} SET lease_owner = %s, lease_until = %s WHERE id IN %s

-- name: queue_lease_locked
-- consumer, deadline, ids, the key lock prefix: lease the messages that have no key or
-- whose key's lock this connection holds (the lock name as Core.key_lock makes it)
UPDATE {table} SET lease_owner = %s, lease_until = %s
WHERE id IN %s
  AND (`key` IS NULL
       OR IS_USED_LOCK(CONCAT('runtime.', LEFT(SHA2(CONCAT(%s, `key`), 256), 48)))
          = CONNECTION_ID())

-- name: queue_claim_verdicts
-- ids (the claim's messages), its "now", ids, ids, consumer, deadline: each message
-- the claim leased, and whether it is out of turn (to give back): another lease of its
-- key is now visible, or an older message of its key waits (see
-- backends/mysql/queues.py)
SELECT m.id,
       EXISTS (
           SELECT 1 FROM {table} AS o
           WHERE o.`key` = m.`key` AND o.lease_until IS NOT NULL AND o.id NOT IN %s)
       OR EXISTS (
           SELECT 1 FROM {table} AS o
           WHERE o.`key` = m.`key` AND o.id < m.id AND o.lease_until IS NULL
             AND o.available_at <= %s AND o.id NOT IN %s)
FROM {table} AS m
WHERE m.id IN %s AND m.lease_owner = %s AND m.lease_until = %s

-- name: queue_prefetch_executions
-- ids, consumer, deadline: the executions of the keys a claim leased, locked (the
-- queue table is only read: a locking clause does not reach into a subquery)
SELECT e.id, e.data FROM executions AS e
WHERE e.id IN (
    SELECT m.`key` FROM {table} AS m
    WHERE m.id IN %s AND m.lease_owner = %s AND m.lease_until = %s)
FOR UPDATE

-- name: queue_give_back
UPDATE {table} SET lease_owner = NULL, lease_until = NULL WHERE id IN %s AND lease_owner = %s

-- name: queue_ack
DELETE FROM {table} WHERE id IN %s

-- name: queue_nack
-- when they become visible again, ids
UPDATE {table}
SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1, available_at = %s
WHERE id IN %s AND lease_until IS NOT NULL

-- name: queue_requeue_consumer
UPDATE {table} SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1
WHERE lease_until IS NOT NULL AND lease_owner = %s

-- name: queue_requeue_expired
UPDATE {table} SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1
WHERE lease_until IS NOT NULL AND lease_until <= %s

-- name: queue_depth
SELECT COUNT(*) FROM {table}

-- name: queue_probe
-- now: is there a message a claim would take? (the poll of waiting consumers; stops
-- at the first one)
SELECT 1 FROM {table} AS m
WHERE m.lease_until IS NULL AND m.available_at <= %s
  AND (m.`key` IS NULL OR NOT EXISTS (
      SELECT 1 FROM {table} AS o WHERE o.`key` = m.`key` AND o.lease_until IS NOT NULL))
LIMIT 1

-- name: queue_next_available
-- the earliest visibility among messages a claim could take once visible (a keyed
-- message held by a leased one waits for an ack or nack)
SELECT MIN(m.available_at) FROM {table} AS m
WHERE m.lease_until IS NULL
  AND (m.`key` IS NULL OR NOT EXISTS (
      SELECT 1 FROM {table} AS o WHERE o.`key` = m.`key` AND o.lease_until IS NOT NULL))
