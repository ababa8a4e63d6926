-- Tern embedded schema, version 1.

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    password_hash TEXT,
    displayname   TEXT,
    avatar_url    TEXT,
    created_ts    INTEGER NOT NULL
);

CREATE TABLE devices (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hashes: a copy of the database grants no access.
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL
);
CREATE INDEX access_tokens_user ON access_tokens (user_id);

CREATE TABLE filters (
    user_id   TEXT NOT NULL,
    filter_id INTEGER NOT NULL,
    filter    TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- room_id is '' for global account data.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type    TEXT NOT NULL,
    content TEXT NOT NULL,
    stream  INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream);

CREATE TABLE rooms (
    room_id    TEXT PRIMARY KEY,
    version    TEXT NOT NULL,
    creator    TEXT NOT NULL,
    is_public  INTEGER NOT NULL DEFAULT 0
);

-- The event log. `stream` is the global, gap-free order in which events were
-- committed; sync tokens and pagination tokens are positions in it.
CREATE TABLE events (
    stream      INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    room_id     TEXT NOT NULL,
    sender      TEXT NOT NULL,
    type        TEXT NOT NULL,
    state_key   TEXT,
    pdu         TEXT NOT NULL,
    txn_device  TEXT,
    txn_id      TEXT,
    visibility  TEXT NOT NULL
);
CREATE INDEX events_room ON events (room_id, stream);
CREATE INDEX events_member ON events (room_id, state_key, stream) WHERE type = 'm.room.member';
-- A device's transaction id in a room maps to exactly one event: retries never duplicate.
CREATE UNIQUE INDEX events_txn ON events (room_id, sender, txn_device, txn_id) WHERE txn_id IS NOT NULL;

CREATE TABLE current_state (
    room_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    state_key TEXT NOT NULL,
    stream    INTEGER NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

CREATE TABLE memberships (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    stream     INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
