-- What the agent needs to notice that the hub's log no longer holds what this store saw
-- (the hub was restored from an older backup), and what it reports after it re-synced.
-- `anchor_*`: the last event of the hub's feed applied here (its position and id).
-- `resynced_*`: the last re-sync (when, own events sent again, snapshot position, why).
ALTER TABLE sync_state ADD COLUMN anchor_position INTEGER;
ALTER TABLE sync_state ADD COLUMN anchor_event BLOB;
ALTER TABLE sync_state ADD COLUMN resynced_at TEXT;
ALTER TABLE sync_state ADD COLUMN resynced_reuploaded INTEGER;
ALTER TABLE sync_state ADD COLUMN resynced_position INTEGER;
ALTER TABLE sync_state ADD COLUMN resynced_reason TEXT;
