-- The event store on PostgreSQL: the same tables and columns as the SQLite file
-- (integers as BIGINT, ids and keys as BYTEA, JSON as the text the writer encoded), plus
-- `log_head`, the one row whose lock orders the writers of every hub (see
-- docs/architecture.md, "Several hubs on PostgreSQL").

CREATE TABLE events (
    position       BIGINT PRIMARY KEY,
    event_id       BYTEA  NOT NULL UNIQUE,
    stream_key     BYTEA  NOT NULL,
    stream_version BIGINT NOT NULL,
    event_type     TEXT   NOT NULL,
    schema_version BIGINT NOT NULL,
    data           TEXT   NOT NULL,
    metadata       TEXT   NOT NULL,
    fingerprint    BYTEA  NOT NULL
);

CREATE TABLE streams (
    stream_key    BYTEA  PRIMARY KEY,
    version       BIGINT NOT NULL,
    last_position BIGINT NOT NULL,
    state         TEXT   NOT NULL
);
-- A hub that takes the write lock reloads the streams other hubs wrote since its own
-- last batch: the rows with a newer last position.
CREATE INDEX streams_by_last_position ON streams (last_position);

CREATE TABLE stores (
    id         BYTEA PRIMARY KEY,
    name       TEXT  NOT NULL,
    created_at TEXT  NOT NULL
);

CREATE TABLE tokens (
    id            BYTEA PRIMARY KEY,
    name          TEXT  NOT NULL,
    role          TEXT  NOT NULL,
    store_id      BYTEA REFERENCES stores (id),
    secret_sha256 BYTEA NOT NULL UNIQUE,
    created_at    TEXT  NOT NULL,
    revoked_at    TEXT
);

CREATE TABLE store_stats (
    store_id         BYTEA  PRIMARY KEY REFERENCES stores (id),
    rejected_uploads BIGINT NOT NULL DEFAULT 0,
    oversells        BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE secrets (
    name  TEXT  PRIMARY KEY,
    value BYTEA NOT NULL
);

-- The write lock and the log's head: every batch of every hub starts with
-- `SELECT ... FOR UPDATE` on this row and ends by moving it, so batches commit one after
-- the other and positions are handed out in commit order.
CREATE TABLE log_head (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    head     BIGINT  NOT NULL,
    stores   BIGINT  NOT NULL
);
INSERT INTO log_head (head, stores) VALUES (0, 0);
