-- Durable per-store counters for the fleet view, kept by the writer in the same
-- transaction as the events they count.
CREATE TABLE store_stats (
    store_id         BLOB    PRIMARY KEY REFERENCES stores (id),
    rejected_uploads INTEGER NOT NULL DEFAULT 0,
    oversells        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
