-- Deactivated accounts keep their row, so the name is never reissued; the
-- time marks them (NULL: active).
ALTER TABLE users ADD COLUMN deactivated_ts BIGINT;

-- Profile fields beyond display name and avatar (`m.tz`, `org.example.pronouns`...),
-- one row each, the value as JSON text.
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field   TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);

-- Reports of events, rooms and users, kept for the server's administrators.
CREATE TABLE reports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter    TEXT NOT NULL,
    room_id     TEXT,
    event_id    TEXT,
    user_id     TEXT,
    reason      TEXT,
    score       BIGINT,
    received_ts BIGINT NOT NULL
);
