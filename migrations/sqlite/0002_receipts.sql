-- Receipts: the latest per (room, user, type, thread), and a log of every
-- advance so "when was this event delivered/read" survives later receipts.

CREATE TABLE receipts (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id    TEXT NOT NULL,   -- '' for unthreaded receipts
    event_id     TEXT NOT NULL,
    event_sender TEXT NOT NULL,   -- delivered receipts are shown to this user only
    event_stream INTEGER NOT NULL,
    ts           INTEGER NOT NULL,
    stream       INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream);

CREATE TABLE receipt_log (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    event_stream INTEGER NOT NULL,
    ts           INTEGER NOT NULL
);
CREATE INDEX receipt_log_room ON receipt_log (room_id, event_stream);
