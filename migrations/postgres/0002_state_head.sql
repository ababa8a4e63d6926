-- The id of each room's latest state event: appends check that the state an
-- event was authorized against is still current (nodes of a cluster race).
-- Only writers holding the `events` counter row append, so the check and the
-- move are atomic across processes.
ALTER TABLE rooms ADD COLUMN state_head TEXT;
UPDATE rooms SET state_head = (
    SELECT event_id FROM events
    WHERE events.room_id = rooms.room_id AND events.state_key IS NOT NULL
    ORDER BY stream DESC LIMIT 1
);
