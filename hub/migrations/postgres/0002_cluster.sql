-- What the hubs of one database share besides the log.

-- A scheduled job runs on the hub that holds its lease; another hub takes the lease over
-- once it has expired (its holder stopped renewing it: stopped or dead).
CREATE TABLE job_leases (
    name   TEXT        PRIMARY KEY,
    holder TEXT        NOT NULL,
    until  TIMESTAMPTZ NOT NULL
);

-- Each hub's view of the agents talking to it, refreshed every few seconds; the fleet view
-- merges the rows of the hubs that refreshed theirs recently.
CREATE TABLE presence (
    hub          TEXT        NOT NULL,
    store_id     BYTEA       NOT NULL,
    last_seen    TEXT,
    heartbeat    TEXT,
    heartbeat_at TEXT,
    push_streams BIGINT      NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (hub, store_id)
);
CREATE INDEX presence_by_updated_at ON presence (updated_at);
