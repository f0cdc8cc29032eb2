-- Secrets this hub keeps with its log: `id_key` derives event ids from clients'
-- Idempotency-Keys (HMAC), so that nobody without it can compute another party's ids.
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
