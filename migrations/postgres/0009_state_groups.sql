-- The room's state at every event (issue 18). A state group is the room's
-- full state at some point, stored as the entries that differ from its
-- parent group, or in full (`snapshot`). A group is named by the state
-- event that made it, or, for a state resolved from several, by a hash of
-- the groups merged (in event-id form).
CREATE TABLE state_groups (
    group_id TEXT PRIMARY KEY,
    room_id  TEXT NOT NULL,
    parent   TEXT,
    snapshot BOOLEAN NOT NULL
);
CREATE TABLE state_group_entries (
    group_id  TEXT NOT NULL,
    type      TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (group_id, type, state_key)
);
-- The state group after each event.
ALTER TABLE events ADD COLUMN state_group TEXT;

-- Rooms from before were one chain: each state event's group is the
-- previous state event's plus itself, and the state after any event is the
-- group of the latest state event at or before it.
INSERT INTO state_groups (group_id, room_id, parent, snapshot)
SELECT e.event_id, e.room_id,
       (SELECT p.event_id FROM events p
         WHERE p.room_id = e.room_id AND p.state_key IS NOT NULL AND p.stream < e.stream
         ORDER BY p.stream DESC LIMIT 1),
       FALSE
FROM events e WHERE e.state_key IS NOT NULL;
UPDATE state_groups SET snapshot = TRUE WHERE parent IS NULL;
INSERT INTO state_group_entries (group_id, type, state_key, event_id)
SELECT event_id, type, state_key, event_id FROM events WHERE state_key IS NOT NULL;
UPDATE events SET state_group = (
    SELECT p.event_id FROM events p
     WHERE p.room_id = events.room_id AND p.state_key IS NOT NULL AND p.stream <= events.stream
     ORDER BY p.stream DESC LIMIT 1);

-- Outliers: events known for authorization and state resolution (the
-- auth chain a join brought) that are not in the room's timeline.
CREATE TABLE outliers (
    event_id TEXT PRIMARY KEY,
    room_id  TEXT NOT NULL,
    pdu      TEXT NOT NULL
);
