-- The durable half of the federation outbox: for each other server and
-- room, the latest of our events it accepted (its transaction answered).
-- After a restart, our events after it (or after its users' join) are
-- sent again; the queue itself lives in memory.
CREATE TABLE federation_progress (
    destination TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    stream      BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
);
