-- Allocations (docs/allocations.md): a stream's policy and the hub's share, as JSON
-- (`{"policy":{"mode":"fixed","units":2},"hub_share":1}`), NULL when the stream has none;
-- and whether an open hold was taken from the hub's share (released, it goes back).
-- No event before this migration carried an allocation, so the defaults are exact.
ALTER TABLE stock ADD COLUMN allocation TEXT;
ALTER TABLE reservations ADD COLUMN hub_share INTEGER NOT NULL DEFAULT 0;
