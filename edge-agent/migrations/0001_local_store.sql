-- The edge agent's local store. Never edit a migration after it has landed: add a new one.

-- Every event recorded at this store, in the order it happened. A row is `pending` until
-- the hub acknowledges it (`acked`, with its hub position), `confirmed` once it has come
-- back in the hub's feed (it is then part of the confirmed state), `quarantined` when the
-- hub rejected it, and `discarded` when an operator gave a quarantined event up.
CREATE TABLE outbox (
    seq            INTEGER PRIMARY KEY,
    event_id       BLOB    NOT NULL UNIQUE,
    product_id     BLOB    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('pending', 'acked', 'confirmed', 'quarantined', 'discarded')),
    hub_position   INTEGER,
    reject_reason  TEXT,
    reject_detail  TEXT,
    recorded_at    TEXT    NOT NULL
);
CREATE INDEX outbox_unconfirmed ON outbox (status, seq) WHERE status IN ('pending', 'acked', 'quarantined');

-- The hub-confirmed state of each of this store's inventory streams (InventoryState JSON).
CREATE TABLE confirmed_streams (
    product_id BLOB PRIMARY KEY,
    state      TEXT NOT NULL
) WITHOUT ROWID;

-- The catalog as the hub last sent it (read-only here).
CREATE TABLE catalog (
    product_id  BLOB    PRIMARY KEY,
    sku         TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    price_minor INTEGER NOT NULL,
    version     INTEGER NOT NULL
) WITHOUT ROWID;

-- Reservations made at this store: this store expires them (the side that made a hold
-- expires it).
CREATE TABLE own_reservations (
    reservation_id BLOB PRIMARY KEY,
    product_id     BLOB NOT NULL
) WITHOUT ROWID;

-- The first answer to each POS request with an Idempotency-Key, written in the same
-- transaction as the event it recorded.
CREATE TABLE idempotency (
    key         TEXT PRIMARY KEY,
    fingerprint BLOB NOT NULL,
    outcome     TEXT NOT NULL,
    created_at  TEXT NOT NULL
) WITHOUT ROWID;

-- Where this agent is in the hub's log.
CREATE TABLE sync_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    cursor       INTEGER NOT NULL,
    hub_head     INTEGER NOT NULL,
    bootstrapped INTEGER NOT NULL,
    last_sync_at TEXT
);
INSERT INTO sync_state (id, cursor, hub_head, bootstrapped) VALUES (1, 0, 0, 0);
