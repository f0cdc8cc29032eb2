-- The analytics file (`analytics.sqlite`): migrations 0001..0003 are the read model's
-- (the stock, catalog and hold tables, which the analytics worker keeps for itself at its
-- own checkpoint, named 'analytics'); this one adds the figures, the alerts and the
-- settings. Never edit a migration after it has landed: add a new one.
--
-- Derived tables (an_*) are written only by the analytics worker, in the same transaction
-- as its checkpoint, and are emptied by a rebuild. Settings tables (reorder_points,
-- store_settings, webhooks, webhook_deliveries) are written by the admin API and the
-- webhook senders and survive a rebuild.

-- Units sold, revenue, expired holds and oversells per product, store and store-local day
-- (`day` = days since 1970-01-01 in the store's time zone).
CREATE TABLE an_daily (
    store_id      BLOB    NOT NULL,
    day           INTEGER NOT NULL,
    product_id    BLOB    NOT NULL,
    units         INTEGER NOT NULL,
    revenue_minor INTEGER NOT NULL,
    expired       INTEGER NOT NULL,
    oversells     INTEGER NOT NULL,
    PRIMARY KEY (store_id, day, product_id)
) WITHOUT ROWID;
CREATE INDEX an_daily_by_product ON an_daily (product_id, store_id, day);

-- Alert events: a low-stock crossing, its clearing, an oversell. Keyed by the position of
-- the log event that caused it (one event changes one stream once), so a rebuild makes the
-- same ids and a webhook cursor stays meaningful.
CREATE TABLE an_alerts (
    position      INTEGER PRIMARY KEY,
    kind          TEXT    NOT NULL,
    product_id    BLOB    NOT NULL,
    store_id      BLOB    NOT NULL,
    available     INTEGER NOT NULL,
    reorder_point INTEGER,
    occurred_at   TEXT    NOT NULL,
    cleared_by    INTEGER
);

-- Open low-stock alerts, one per stream at most.
CREATE TABLE an_low_stock (
    product_id BLOB    NOT NULL,
    store_id   BLOB    NOT NULL,
    alert      INTEGER NOT NULL,
    PRIMARY KEY (product_id, store_id)
) WITHOUT ROWID;

-- Reorder points: store_id is the empty blob for the product's point at every store.
CREATE TABLE reorder_points (
    product_id    BLOB    NOT NULL,
    store_id      BLOB    NOT NULL,
    reorder_point INTEGER NOT NULL,
    PRIMARY KEY (product_id, store_id)
) WITHOUT ROWID;

-- A store's IANA time zone (absent: UTC).
CREATE TABLE store_settings (
    store_id  BLOB PRIMARY KEY,
    time_zone TEXT NOT NULL
) WITHOUT ROWID;

-- Webhook subscribers; `cursor` is the last alert handed over (delivered or dead), and
-- `attempts` the failed attempts at the next one.
CREATE TABLE webhooks (
    id         BLOB    PRIMARY KEY,
    url        TEXT    NOT NULL,
    events     TEXT    NOT NULL,
    secret     TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    cursor     INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Deliveries: 'delivered', 'dead' (the dead-letter list) or 'redeliver' (queued by hand).
CREATE TABLE webhook_deliveries (
    webhook_id BLOB    NOT NULL,
    alert      INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    last_error TEXT,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (webhook_id, alert)
) WITHOUT ROWID;
CREATE INDEX webhook_redeliveries ON webhook_deliveries (status, webhook_id);
