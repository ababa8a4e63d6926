-- The events whose push notifications were queued (by global stream
-- position), kept for an hour. On a cluster an event can be handed to two
-- nodes (one died before saying it was done); the second finds it here and
-- queues nothing.
CREATE TABLE push_decided (
    stream     BIGINT PRIMARY KEY,
    decided_ts BIGINT NOT NULL
);
CREATE INDEX push_decided_ts ON push_decided (decided_ts);
