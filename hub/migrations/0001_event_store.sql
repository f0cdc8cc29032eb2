-- The hub's event store. Never edit a migration after it has landed: add a new one.
--
-- `events` is keyed by `position` (the rowid), so every append lands on the right-most
-- leaf page. There is deliberately no UNIQUE(stream, stream_version) index: with
-- thousands of interleaved streams such an index dirties one random page per event.
-- The single writer owns stream heads in memory and in `streams`, which is what makes
-- (stream, version) unique; `streams` is small and its pages stay hot.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    event_id       BLOB    NOT NULL,
    stream_key     BLOB    NOT NULL,
    stream_version INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    fingerprint    BLOB    NOT NULL
);

-- UUIDv7 ids are time-ordered, so this index also grows at its right edge.
CREATE UNIQUE INDEX events_by_event_id ON events (event_id);

-- The write side's aggregate state per stream, updated in the same transaction as the
-- events, so the writer starts without replaying the log.
CREATE TABLE streams (
    stream_key    BLOB    PRIMARY KEY,
    version       INTEGER NOT NULL,
    last_position INTEGER NOT NULL,
    state         TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TABLE stores (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

-- Bearer tokens, stored as SHA-256 of the secret. `role` is admin, channel or store;
-- a store token names its store.
CREATE TABLE tokens (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    store_id   BLOB REFERENCES stores (id),
    secret_sha256 BLOB NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
) WITHOUT ROWID;
