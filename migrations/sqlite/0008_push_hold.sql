-- A notification for a user who was connected when it was decided is held
-- for a short grace and sent only if by then none of their devices received
-- (or read) the room up to the event: `hold_room` and `hold_stream` name
-- that event. NULL for notifications sent unconditionally.
ALTER TABLE push_outbox ADD COLUMN hold_room TEXT;
ALTER TABLE push_outbox ADD COLUMN hold_stream INTEGER;
