-- The statements PostgreSQL spells its own way, by name (backends.sql.queries format);
-- those every dialect shares are in backends/sql/queries.sql.
-- Parameters are positional ($1, $2, ...); instants are epoch microseconds (UTC).
-- Queries on one queue's table say {table}; they are rendered once per queue, and
-- asyncpg prepares each text once per connection.
-- The statements below that wake consumers (nack, requeues: rare) call
-- pg_notify($channel, $sender) themselves (publishes and acks are woken after their
-- commit by backends/postgres/notifier.py): the
-- notification is delivered when the statement's transaction commits, and never if it
-- rolls back. $sender names the backend instance, whose own listener ignores it (it
-- wakes its waiters in-process instead).

-- ---------------------------------------------------------------- migrations
-- name: migrations_lock
-- session-level: held across the migration transaction, released by migrations_unlock
SELECT pg_advisory_lock($1)

-- name: migrations_unlock
SELECT pg_advisory_unlock($1)

-- name: schema_exists
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)

-- name: schema_create
-- {schema} is checked to be a plain identifier before it is spliced in
CREATE SCHEMA IF NOT EXISTS {schema}

-- ---------------------------------------------------------------- executions

-- name: execution_get_for_update
SELECT data FROM executions WHERE id = $1 FOR UPDATE

-- name: execution_count_in_states
SELECT count(*) FROM executions
WHERE namespace = $1 AND flow_id = $2 AND state = ANY($3::text[])

-- name: execution_oldest_in_state
SELECT id FROM executions
WHERE namespace = $1 AND flow_id = $2 AND state = $3
ORDER BY start_date NULLS FIRST, id
LIMIT 1

-- ---------------------------------------------------------------- flows
-- name: flow_lock
-- one deploy of a flow at a time (a new flow has no row to lock yet)
SELECT pg_advisory_xact_lock($1::int, hashtext($2::text || '/' || $3::text))

-- ---------------------------------------------------------------- logs

-- (log lines are written by backends/postgres/deferred.py, with a transaction's other
-- deferred writes)

-- ---------------------------------------------------------------- kills

-- name: kill_request
INSERT INTO kills (task_run_id, requested_at)
SELECT id, $2 FROM unnest($1::text[]) AS u(id)
ON CONFLICT (task_run_id) DO NOTHING

-- name: kill_requested
SELECT task_run_id FROM kills WHERE task_run_id = ANY($1::text[])

-- name: kill_clear
DELETE FROM kills WHERE task_run_id = ANY($1::text[])

-- ---------------------------------------------------------------- leader lock

-- name: leader_acquire
-- $1 name, $2 holder, $3 expires_at, $4 now: take a free or expired lease, renew our own
INSERT INTO leader_locks AS l (name, holder, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE l.holder = excluded.holder OR l.expires_at <= $4
RETURNING holder

-- name: leader_take
-- the lease whatever its state: the caller holds the name's advisory lock, so the
-- previous holder's session is gone
INSERT INTO leader_locks (name, holder, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at

-- name: leader_try_lock
SELECT pg_try_advisory_lock($1)

-- name: leader_unlock
SELECT pg_advisory_unlock($1)

-- ---------------------------------------------------------------- queues
-- name: queue_table
SELECT table_name FROM registered_queues WHERE queue = $1

-- name: queue_create_lock
-- one creator of queue tables at a time (concurrent CREATE TABLE IF NOT EXISTS of one
-- name can fail on the catalog's unique indexes)
SELECT pg_advisory_xact_lock($1)

-- name: queue_register
INSERT INTO registered_queues (queue, table_name) VALUES ($1, $2)
ON CONFLICT (queue) DO NOTHING

-- name: queue_create_table
-- Rows are deleted on ack, so a queue table churns: vacuum it after a fixed number of
-- dead rows, not a fraction of its (small) size, or claims wade through dead tuples.
CREATE TABLE IF NOT EXISTS {table} (
    id            BIGINT PRIMARY KEY DEFAULT nextval('queue_message_ids'),
    key           TEXT COLLATE "C",
    payload       BYTEA NOT NULL,
    available_at  BIGINT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease_owner   TEXT,
    lease_until   BIGINT
) WITH (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000
)

-- name: queue_create_claim_index
-- claims walk the messages not leased in id order
CREATE INDEX IF NOT EXISTS {table}_claim ON {table} (id) WHERE lease_until IS NULL

-- name: queue_create_key_index
-- per-key exclusivity: is a message with this key leased? (leased rows are few)
CREATE INDEX IF NOT EXISTS {table}_keys ON {table} (key) WHERE lease_until IS NOT NULL

-- name: queue_create_waiting_index
-- the keyed messages not leased, by key in order: a claim's recheck looks for older
-- messages of its keys it did not take
CREATE INDEX IF NOT EXISTS {table}_wait ON {table} (key, id)
WHERE lease_until IS NULL AND key IS NOT NULL

-- name: queue_create_lease_index
-- the leased messages: expired leases, a dead consumer's leases
CREATE INDEX IF NOT EXISTS {table}_lease ON {table} (lease_until)
WHERE lease_until IS NOT NULL

-- (publishing and acking are written by backends/postgres/deferred.py: a transaction
-- sends them together with its execution saves, as one statement)

-- name: queue_claim
-- $1 consumer, $2 lease deadline, $3 now, $4 limit, $5 the queue's advisory lock class.
-- Oldest first; a keyed message waits while any message with its key is leased, and a
-- delayed one does not hold its key. SKIP LOCKED passes over rows another transaction
-- is claiming. A lease is invisible to others until its transaction commits, so a
-- claim also takes the transaction-level advisory lock of each key it leases (class
-- $5, hashtext(key)); a concurrent claim fails to take it and leaves the key alone.
-- The lock is tried in the outer query, on the (at most $4) rows the subquery picked:
-- inside it, the planner may evaluate a filter on every row before sorting, and would
-- lock every key of the queue.
UPDATE {table} AS q SET lease_owner = $1, lease_until = $2
FROM (
    SELECT m.id, m.key FROM {table} AS m
    WHERE m.lease_until IS NULL AND m.available_at <= $3
      AND (m.key IS NULL OR NOT EXISTS (
          SELECT 1 FROM {table} AS o WHERE o.key = m.key AND o.lease_until IS NOT NULL))
    ORDER BY m.id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
) AS picked
WHERE q.id = picked.id
  AND (picked.key IS NULL OR pg_try_advisory_xact_lock($5, hashtext(picked.key)))
RETURNING q.id, q.key, q.payload, q.attempts

-- name: queue_claim_autocommit
-- queue_claim as a transaction of its own (a worker's claim): its commit does not wait
-- for the WAL to reach the disk (synchronous_commit off, for this transaction only,
-- set by the statement itself; it runs when a row is leased, and a claim that leases
-- nothing writes nothing). What a crash of the server can lose is a lease, never a
-- message: the message is claimable again, as after any consumer's crash, and the
-- engine ignores a second result of the same attempt.
UPDATE {table} AS q SET lease_owner = $1, lease_until = $2
FROM (
    SELECT m.id, m.key FROM {table} AS m
    WHERE m.lease_until IS NULL AND m.available_at <= $3
      AND (m.key IS NULL OR NOT EXISTS (
          SELECT 1 FROM {table} AS o WHERE o.key = m.key AND o.lease_until IS NOT NULL))
    ORDER BY m.id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
) AS picked
WHERE q.id = picked.id
  AND (picked.key IS NULL OR pg_try_advisory_xact_lock($5, hashtext(picked.key)))
RETURNING q.id, q.key, q.payload, q.attempts,
          set_config('synchronous_commit', 'off', true)

-- name: queue_claim_executions
-- The executor's claim, in its batch transaction: queue_claim's parameters, leasing
-- and locking the same way, and reading (locked) the execution each key names, NULL
-- where there is none. It needs no recheck (queue_claim_recheck): its caller settles
-- (acks or nacks) every message it claimed before it commits, so no lease of this
-- queue is ever committed, and each key's lock is tried once, in "taken", not once
-- per message; a key is left alone when a message of it older than the ones picked is
-- waiting in this snapshot (another claim holds it, or held it a moment ago), and a
-- message is leased only with every older waiting message of its key (no gaps), so
-- what is leased is, per key, a prefix of its backlog.
WITH picked AS MATERIALIZED (
    SELECT m.id, m.key FROM {table} AS m
    WHERE m.lease_until IS NULL AND m.available_at <= $3
      AND (m.key IS NULL OR NOT EXISTS (
          SELECT 1 FROM {table} AS o WHERE o.key = m.key AND o.lease_until IS NOT NULL))
    ORDER BY m.id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
), firsts AS MATERIALIZED (
    SELECT key, min(id) AS first FROM picked WHERE key IS NOT NULL GROUP BY key
), taken AS MATERIALIZED (
    SELECT f.key FROM firsts AS f
    WHERE NOT EXISTS (
        SELECT 1 FROM {table} AS o
        WHERE o.key = f.key AND o.id < f.first AND o.lease_until IS NULL
          AND o.available_at <= $3)
      AND pg_try_advisory_xact_lock($5, hashtext(f.key))
), claimed AS (
    UPDATE {table} AS q SET lease_owner = $1, lease_until = $2
    FROM picked AS p
    WHERE q.id = p.id
      AND (p.key IS NULL OR (
          p.key IN (SELECT key FROM taken)
          -- no gap: a message of the key between the picked ones (another claim was
          -- picking it) keeps this one and the later ones back
          AND NOT EXISTS (
              SELECT 1 FROM {table} AS o
              WHERE o.key = p.key AND o.id < p.id AND o.lease_until IS NULL
                AND o.available_at <= $3 AND o.id NOT IN (SELECT id FROM picked))))
    RETURNING q.id, q.key, q.payload, q.attempts
)
SELECT c.id, c.key, c.payload, c.attempts,
       (SELECT e.data FROM executions AS e WHERE e.id = c.key FOR UPDATE) AS execution
FROM claimed AS c

-- name: queue_claim_recheck
-- $1 the keyed messages a claim just leased, $2 its consumer, $3 its "now", $4 channel,
-- $5 sender; returns the ids given back (NULL: none), waking consumers if any. Two ways a
-- claim can lease messages of a key out of turn, both fixed here by giving those
-- messages back untouched:
-- 1. its snapshot was taken before it held the key's lock, so it may have missed a
--    lease of the key committed in between (by a claim that held the lock then);
-- 2. its scan may have skipped an older message of the key (that key's lock was held
--    when the scan tried it, and free again at a later message of the key).
-- This statement's snapshot is newer than the locks, which the claim holds until its
-- transaction ends: no other claim can lease these keys meanwhile, and every lease
-- committed before is visible. What stays leased is, per key, a prefix of the key's
-- visible backlog, and the only lease of the key.
WITH given_back AS (
    UPDATE {table} AS m SET lease_owner = NULL, lease_until = NULL
    WHERE m.id = ANY($1::bigint[]) AND m.lease_owner = $2
      AND (
          EXISTS (
              SELECT 1 FROM {table} AS o
              WHERE o.key = m.key AND o.lease_until IS NOT NULL AND o.id <> ALL($1::bigint[]))
          OR EXISTS (
              SELECT 1 FROM {table} AS o
              WHERE o.key = m.key AND o.id < m.id AND o.lease_until IS NULL
                AND o.available_at <= $3 AND o.id <> ALL($1::bigint[]))
      )
    RETURNING m.id
), counted AS (SELECT array_agg(id) AS ids FROM given_back)
SELECT ids, CASE WHEN ids IS NOT NULL THEN pg_notify($4, $5) END FROM counted

-- name: queue_nack
-- $1 ids, $2 when they become visible again, $3 channel, $4 sender
WITH released AS (
    UPDATE {table}
    SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1, available_at = $2
    WHERE id = ANY($1::bigint[]) AND lease_until IS NOT NULL
    RETURNING 1
), counted AS (SELECT count(*) AS n FROM released)
SELECT n, CASE WHEN n > 0 THEN pg_notify($3, $4) END FROM counted

-- name: queue_requeue_consumer
-- $1 consumer, $2 channel, $3 sender
WITH released AS (
    UPDATE {table} SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1
    WHERE lease_until IS NOT NULL AND lease_owner = $1
    RETURNING 1
), counted AS (SELECT count(*) AS n FROM released)
SELECT n, CASE WHEN n > 0 THEN pg_notify($2, $3) END FROM counted

-- name: queue_requeue_expired
-- $1 now, $2 channel, $3 sender
WITH released AS (
    UPDATE {table} SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1
    WHERE lease_until IS NOT NULL AND lease_until <= $1
    RETURNING 1
), counted AS (SELECT count(*) AS n FROM released)
SELECT n, CASE WHEN n > 0 THEN pg_notify($2, $3) END FROM counted

-- name: queue_depth
SELECT count(*) FROM {table}

-- name: queue_next_available
-- the earliest visibility among messages a claim could take once visible (a keyed
-- message held by a leased one waits for an ack or nack, which wakes consumers)
SELECT min(m.available_at) FROM {table} AS m
WHERE m.lease_until IS NULL
  AND (m.key IS NULL OR NOT EXISTS (
      SELECT 1 FROM {table} AS o WHERE o.key = m.key AND o.lease_until IS NOT NULL))
