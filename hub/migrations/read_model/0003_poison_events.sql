-- Events the projection could not apply: skipped (the checkpoint moves past them) and kept
-- here, with the reason, for an operator. One bad event must never stop the read side.
CREATE TABLE poison_events (
    position   INTEGER PRIMARY KEY,
    event_id   BLOB NOT NULL,
    reason     TEXT NOT NULL,
    skipped_at TEXT NOT NULL
);
