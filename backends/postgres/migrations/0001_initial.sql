-- The first schema. Instants are BIGINT epoch microseconds (UTC), as in every SQL
-- dialect (backends/sql/mapping.py). Identifiers compare and sort bytewise
-- (COLLATE "C", as in SQLite). JSON is msgspec-encoded TEXT, BYTEA for the executions
-- (the hot path; read one with convert_from(data, 'UTF8')::jsonb).
-- Queue tables are not here: one table per queue, created on first use from the
-- queue_* templates in queries.sql, and listed in registered_queues.

CREATE TABLE executions (
    id          TEXT COLLATE "C" PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    flow_id     TEXT COLLATE "C" NOT NULL,
    state       TEXT NOT NULL,
    start_date  BIGINT,
    end_date    BIGINT,
    data        BYTEA NOT NULL
) WITH (fillfactor = 80);  -- room for HOT updates: an execution is rewritten per event
-- search newest first: by flow, by namespace, or over everything
CREATE INDEX executions_flow_start
    ON executions (namespace, flow_id, start_date DESC NULLS LAST, id DESC);
CREATE INDEX executions_namespace_start
    ON executions (namespace, start_date DESC NULLS LAST, id DESC);
CREATE INDEX executions_start ON executions (start_date DESC NULLS LAST, id DESC);
-- concurrency: running count and oldest queued of one flow
CREATE INDEX executions_flow_state ON executions (namespace, flow_id, state, start_date);

CREATE TABLE flows (
    namespace   TEXT COLLATE "C" NOT NULL,
    flow_id     TEXT COLLATE "C" NOT NULL,
    revision    INTEGER NOT NULL,
    source      TEXT NOT NULL,
    updated     BIGINT NOT NULL,
    deleted     BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (namespace, flow_id, revision)
);

CREATE TABLE logs (
    execution_id  TEXT COLLATE "C" NOT NULL,
    seq           BIGINT NOT NULL,
    namespace     TEXT COLLATE "C" NOT NULL,
    flow_id       TEXT COLLATE "C" NOT NULL,
    timestamp     BIGINT NOT NULL,
    level         TEXT NOT NULL,
    level_number  INTEGER NOT NULL,
    message       TEXT NOT NULL,
    task_run_id   TEXT,
    task_id       TEXT,
    attempt       INTEGER,
    PRIMARY KEY (execution_id, seq)
);

-- the last seq given out per execution: appending bumps it with an upsert, whose row
-- lock numbers concurrent appends of one execution one after the other
CREATE TABLE log_seqs (
    execution_id  TEXT COLLATE "C" PRIMARY KEY,
    last_seq      BIGINT NOT NULL
);

CREATE TABLE triggers (
    namespace      TEXT COLLATE "C" NOT NULL,
    flow_id        TEXT COLLATE "C" NOT NULL,
    trigger_id     TEXT COLLATE "C" NOT NULL,
    next_date      BIGINT,
    last_date      BIGINT,
    disabled       BOOLEAN NOT NULL DEFAULT false,
    flow_revision  INTEGER,
    data           TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (namespace, flow_id, trigger_id)
);

CREATE TABLE kv (
    namespace   TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    value       TEXT NOT NULL,
    updated     BIGINT NOT NULL,
    expires_at  BIGINT,
    PRIMARY KEY (namespace, key)
);

CREATE TABLE kills (
    task_run_id   TEXT PRIMARY KEY,
    requested_at  BIGINT NOT NULL
);

CREATE TABLE services (
    id         TEXT COLLATE "C" PRIMARY KEY,
    kind       TEXT NOT NULL,
    heartbeat  BIGINT NOT NULL,
    data       TEXT NOT NULL
);

CREATE TABLE leader_locks (
    name        TEXT COLLATE "C" PRIMARY KEY,
    holder      TEXT COLLATE "C" NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- which queues exist, and the table of each (not named queue_*: that prefix is
-- reserved for the queue tables themselves)
CREATE TABLE registered_queues (
    queue       TEXT COLLATE "C" PRIMARY KEY,
    table_name  TEXT NOT NULL UNIQUE
);

-- message ids of every queue come from this one sequence: an id names one message in
-- the whole database (an ack sent to the wrong queue deletes nothing), and ids are
-- never reused, so a late ack of an old id can never delete a newer message
CREATE SEQUENCE queue_message_ids AS BIGINT;
