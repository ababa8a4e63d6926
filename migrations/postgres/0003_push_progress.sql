-- Per room, the newest event whose push notifications were queued. On a
-- cluster an event can be handed to two nodes (one died before saying it was
-- done); the second finds it decided here and queues nothing.
CREATE TABLE push_progress (
    room_id TEXT PRIMARY KEY,
    stream  BIGINT NOT NULL
);
