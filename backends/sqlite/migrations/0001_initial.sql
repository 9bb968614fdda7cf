-- The first schema. Instants are INTEGER epoch microseconds (UTC); JSON is TEXT.
-- Queue tables are not here: one table per queue, created on first use from the
-- queue_* templates in queries.sql, and listed in registered_queues.

CREATE TABLE executions (
    id          TEXT PRIMARY KEY,
    namespace   TEXT NOT NULL,
    flow_id     TEXT NOT NULL,
    state       TEXT NOT NULL,
    start_date  INTEGER,
    end_date    INTEGER,
    data        TEXT NOT NULL
);
-- search newest first: by flow, by namespace, or over everything
CREATE INDEX executions_flow_start ON executions (namespace, flow_id, start_date);
CREATE INDEX executions_namespace_start ON executions (namespace, start_date);
CREATE INDEX executions_start ON executions (start_date);
-- concurrency: running count and oldest queued of one flow
CREATE INDEX executions_flow_state ON executions (namespace, flow_id, state, start_date);

CREATE TABLE flows (
    namespace   TEXT NOT NULL,
    flow_id     TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    source      TEXT NOT NULL,
    updated     INTEGER NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, flow_id, revision)
) WITHOUT ROWID;

CREATE TABLE logs (
    execution_id  TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    namespace     TEXT NOT NULL,
    flow_id       TEXT NOT NULL,
    timestamp     INTEGER NOT NULL,
    level         TEXT NOT NULL,
    level_number  INTEGER NOT NULL,
    message       TEXT NOT NULL,
    task_run_id   TEXT,
    task_id       TEXT,
    attempt       INTEGER
);
CREATE UNIQUE INDEX logs_execution_seq ON logs (execution_id, seq);

CREATE TABLE triggers (
    namespace      TEXT NOT NULL,
    flow_id        TEXT NOT NULL,
    trigger_id     TEXT NOT NULL,
    next_date      INTEGER,
    last_date      INTEGER,
    disabled       INTEGER NOT NULL DEFAULT 0,
    flow_revision  INTEGER,
    data           TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (namespace, flow_id, trigger_id)
) WITHOUT ROWID;

CREATE TABLE kv (
    namespace   TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated     INTEGER NOT NULL,
    expires_at  INTEGER,
    PRIMARY KEY (namespace, key)
);

CREATE TABLE kills (
    task_run_id   TEXT PRIMARY KEY,
    requested_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE services (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    heartbeat  INTEGER NOT NULL,
    data       TEXT NOT NULL
);

CREATE TABLE leader_locks (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- which queues exist, and the table of each (not named queue_*: that prefix is
-- reserved for the queue tables themselves)
CREATE TABLE registered_queues (
    queue       TEXT PRIMARY KEY,
    table_name  TEXT NOT NULL UNIQUE,
    ordinal     INTEGER NOT NULL UNIQUE
) WITHOUT ROWID;
