-- The first schema, for MySQL 8 and MariaDB 10.6+. Instants are BIGINT epoch
-- microseconds (UTC), as in every SQL dialect (backends/sql/mapping.py); identifiers
-- compare and sort by code point (utf8mb4_bin, as COLLATE "C" on PostgreSQL). JSON is
-- msgspec-encoded text, LONGBLOB for the executions (the hot path). DDL commits by
-- itself in MySQL, so every statement here can run again after a crash half-way.
-- Queue tables are not here: one table per queue, created on first use from the
-- queue_* templates in queries.sql, and listed in registered_queues.

CREATE TABLE IF NOT EXISTS executions (
    id          VARCHAR(255) NOT NULL PRIMARY KEY,
    namespace   VARCHAR(255) NOT NULL,
    flow_id     VARCHAR(255) NOT NULL,
    state       VARCHAR(32) NOT NULL,
    start_date  BIGINT NULL,
    end_date    BIGINT NULL,
    data        LONGBLOB NOT NULL,
    -- label items, key U+001F value (backends/sql/mapping.py label_item)
    labels      JSON NOT NULL,
    -- search newest first: by flow, by namespace, or over everything
    KEY executions_flow_start (namespace, flow_id, start_date, id),
    KEY executions_namespace_start (namespace, start_date, id),
    KEY executions_start (start_date, id),
    -- concurrency: running count and oldest queued of one flow
    KEY executions_flow_state (namespace, flow_id, state, start_date)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS flows (
    namespace   VARCHAR(255) NOT NULL,
    flow_id     VARCHAR(255) NOT NULL,
    revision    INTEGER NOT NULL,
    source      LONGTEXT NOT NULL,
    updated     BIGINT NOT NULL,
    deleted     BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (namespace, flow_id, revision)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS logs (
    execution_id  VARCHAR(255) NOT NULL,
    seq           BIGINT NOT NULL,
    namespace     VARCHAR(255) NOT NULL,
    flow_id       VARCHAR(255) NOT NULL,
    timestamp     BIGINT NOT NULL,
    level         VARCHAR(16) NOT NULL,
    level_number  INTEGER NOT NULL,
    message       LONGTEXT NOT NULL,
    task_run_id   VARCHAR(255) NULL,
    task_id       VARCHAR(255) NULL,
    attempt       INTEGER NULL,
    PRIMARY KEY (execution_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- the last seq given out per execution: appending bumps it with an upsert, whose row
-- lock numbers concurrent appends of one execution one after the other
CREATE TABLE IF NOT EXISTS log_seqs (
    execution_id  VARCHAR(255) NOT NULL PRIMARY KEY,
    last_seq      BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS triggers (
    namespace      VARCHAR(255) NOT NULL,
    flow_id        VARCHAR(255) NOT NULL,
    trigger_id     VARCHAR(255) NOT NULL,
    next_date      BIGINT NULL,
    last_date      BIGINT NULL,
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    flow_revision  INTEGER NULL,
    data           LONGTEXT NOT NULL,
    PRIMARY KEY (namespace, flow_id, trigger_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS kv (
    namespace   VARCHAR(255) NOT NULL,
    `key`       VARCHAR(255) NOT NULL,
    value       LONGTEXT NOT NULL,
    updated     BIGINT NOT NULL,
    expires_at  BIGINT NULL,
    PRIMARY KEY (namespace, `key`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS kills (
    task_run_id   VARCHAR(255) NOT NULL PRIMARY KEY,
    requested_at  BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS services (
    id         VARCHAR(255) NOT NULL PRIMARY KEY,
    kind       VARCHAR(64) NOT NULL,
    heartbeat  BIGINT NOT NULL,
    data       LONGTEXT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS leader_locks (
    name        VARCHAR(255) NOT NULL PRIMARY KEY,
    holder      VARCHAR(255) NOT NULL,
    expires_at  BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- which queues exist, the table of each, and its ordinal: the n-th queue's message
-- ids start at n << 40, so an id names one message in the whole database (an ack sent
-- to the wrong queue deletes nothing); AUTO_INCREMENT counters are persisted (MySQL 8,
-- MariaDB 10.6), so ids are never reused and a late ack never deletes a newer message
CREATE TABLE IF NOT EXISTS registered_queues (
    queue       VARCHAR(255) NOT NULL PRIMARY KEY,
    table_name  VARCHAR(64) NOT NULL UNIQUE,
    ordinal     INTEGER NOT NULL UNIQUE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
