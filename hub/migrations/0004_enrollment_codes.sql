-- One-step enrollment: short-lived, single-use codes that a store's agent exchanges for a
-- new store token (`shelfsync-edge enroll`). Stored as SHA-256 of the normalized code, like
-- tokens. Times are Unix seconds (compared and pruned in SQL); `used_at` is set once, in
-- the writer's transaction that also issues the token.
CREATE TABLE enrollment_codes (
    code_sha256 BLOB    PRIMARY KEY,
    store_id    BLOB    NOT NULL REFERENCES stores (id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
) WITHOUT ROWID;
