-- Tern on PostgreSQL, version 1: the embedded schema's tables (see
-- migrations/sqlite/) for a database that several homeserver processes share.
-- JSON is kept as TEXT: it is written and read whole, never queried inside
-- (except a membership in membership_history), and TEXT keeps a signed PDU's
-- bytes exactly as the server produced them.

-- One row per positioned stream. A writer locks its stream's row
-- (SELECT ... FOR UPDATE or UPDATE) inside the transaction that writes the
-- positioned rows and sets `pos` to the last position it used, so positions
-- are handed out gap-free and in commit order across every process: the next
-- writer cannot read the counter until this transaction has committed.
CREATE TABLE stream_positions (
    name TEXT PRIMARY KEY,
    pos  BIGINT NOT NULL
);
INSERT INTO stream_positions (name, pos) VALUES ('events', 0), ('receipts', 0), ('account_data', 0);

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    password_hash TEXT,
    displayname   TEXT,
    avatar_url    TEXT,
    created_ts    BIGINT NOT NULL
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
    filter_id BIGINT NOT NULL,
    filter    TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- room_id is '' for global account data.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type    TEXT NOT NULL,
    content TEXT NOT NULL,
    stream  BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream);

-- last_event_id / last_stream: the room's head as of the latest append, moved
-- in the same transaction as the event, so a node can check inside that
-- transaction that nobody else extended the room since it built its event.
CREATE TABLE rooms (
    room_id       TEXT PRIMARY KEY,
    version       TEXT NOT NULL,
    creator       TEXT NOT NULL,
    is_public     BOOLEAN NOT NULL DEFAULT FALSE,
    last_event_id TEXT,
    last_stream   BIGINT
);
CREATE INDEX rooms_public ON rooms (room_id) WHERE is_public;

-- The event log. `stream` is the global, gap-free order in which events were
-- committed; sync tokens and pagination tokens are positions in it.
CREATE TABLE events (
    stream      BIGINT PRIMARY KEY,
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
    stream    BIGINT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_stream ON current_state (room_id, stream);

CREATE TABLE memberships (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    stream     BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Receipts: the latest per (room, user, type, thread), and a log of every
-- advance so "when was this event delivered/read" survives later receipts.
CREATE TABLE receipts (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id    TEXT NOT NULL,   -- '' for unthreaded receipts
    event_id     TEXT NOT NULL,
    event_sender TEXT NOT NULL,   -- delivered receipts are shown to this user only
    event_stream BIGINT NOT NULL,
    ts           BIGINT NOT NULL,
    stream       BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream);

CREATE TABLE receipt_log (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    event_stream BIGINT NOT NULL,
    ts           BIGINT NOT NULL
);
CREATE INDEX receipt_log_room ON receipt_log (room_id, event_stream);

-- Media uploaded to this server; the bytes live in the media store.
CREATE TABLE media (
    media_id         TEXT PRIMARY KEY,
    uploader         TEXT NOT NULL,
    content_type     TEXT,
    filename         TEXT,
    size             BIGINT,           -- NULL while pending
    sha256           TEXT,             -- lower-case hex, NULL while pending
    created_ts       BIGINT NOT NULL,
    pending_until_ts BIGINT            -- set while reserved by POST /create
);
CREATE INDEX media_pending ON media (uploader, pending_until_ts)
    WHERE pending_until_ts IS NOT NULL;

-- Pushers: one per (user, app_id, pushkey). `seq` keeps insertion order
-- among pushers created in the same millisecond (SQLite's rowid).
CREATE TABLE pushers (
    seq                 BIGSERIAL,
    user_id             TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT,
    lang                TEXT NOT NULL,
    data                TEXT NOT NULL,   -- JSON: url, format, ...
    device_id           TEXT,
    created_ts          BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers (app_id, pushkey);

-- The push outbox: notifications decided but not yet accepted by a gateway.
CREATE TABLE push_outbox (
    id          BIGSERIAL PRIMARY KEY,
    user_id     TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    pushkey     TEXT NOT NULL,
    url         TEXT NOT NULL,
    body        TEXT NOT NULL,    -- the gateway request, JSON
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_ts     BIGINT NOT NULL
);
CREATE INDEX push_outbox_due ON push_outbox (next_ts);
