-- The hub's stock read model: a projection of the event log, rebuildable from zero at any
-- time (`shelfsync-hub rebuild-projections`). Never edit a migration after it has landed:
-- add a new one (or, since the file is disposable, bump the schema and rebuild).
--
-- Every table is written only by the projector, in the same transaction as `checkpoint`,
-- so a reader that reads `checkpoint` and a row in one transaction knows exactly which
-- prefix of the log that row reflects.

-- Stock of one product at one store (one inventory stream).
CREATE TABLE stock (
    product_id BLOB    NOT NULL,
    store_id   BLOB    NOT NULL,
    on_hand    INTEGER NOT NULL,
    reserved   INTEGER NOT NULL,
    available  INTEGER NOT NULL,
    version    INTEGER NOT NULL,  -- stream version the figures are at
    position   INTEGER NOT NULL,  -- global position of the stream's last event
    PRIMARY KEY (product_id, store_id)
) WITHOUT ROWID;

-- The catalog: one row per registered product. The write side keeps SKUs unique.
CREATE TABLE products (
    id          BLOB    PRIMARY KEY,
    sku         TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    price_minor INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    position    INTEGER NOT NULL
) WITHOUT ROWID;

-- Open reservations (removed when released or committed). Keyed by stream first: the
-- projector loads a stream's holds by prefix, and an id reused on another stream (the
-- domain checks uniqueness per stream only) cannot wedge the projection on a conflict.
-- `origin` is the store that recorded the hold, NULL when the hub did: the side that made
-- a reservation expires it. `expires_at` is fixed-width UTC text, so it sorts as time.
CREATE TABLE reservations (
    product_id     BLOB    NOT NULL,
    store_id       BLOB    NOT NULL,
    reservation_id BLOB    NOT NULL,
    quantity       INTEGER NOT NULL,
    expires_at     TEXT    NOT NULL,
    origin         BLOB,
    PRIMARY KEY (product_id, store_id, reservation_id)
) WITHOUT ROWID;

CREATE INDEX reservations_by_store ON reservations (store_id);
CREATE INDEX reservations_by_expiry ON reservations (expires_at);

-- How far each projection has read the log (inclusive position).
CREATE TABLE checkpoint (
    name     TEXT    PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;
