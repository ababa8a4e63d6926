-- Rooms a user forgot (POST /rooms/{roomId}/forget) after leaving: hidden
-- from their syncs and history reads while their membership is still the
-- one at `stream` (the leave or ban they forgot); a later invite or join
-- makes the room theirs again.
CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream  BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
