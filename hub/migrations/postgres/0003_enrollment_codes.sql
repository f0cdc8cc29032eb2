-- One-step enrollment codes (see migrations/0004_enrollment_codes.sql, the SQLite twin):
-- SHA-256 of the normalized code, its store, Unix-second times; single use is enforced in
-- the writer's batch, which holds the cluster-wide write lock.
CREATE TABLE enrollment_codes (
    code_sha256 BYTEA  PRIMARY KEY,
    store_id    BYTEA  NOT NULL REFERENCES stores (id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
