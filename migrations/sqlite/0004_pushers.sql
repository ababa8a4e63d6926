-- Pushers: where to send a user's push notifications (POST /pushers/set).
-- One per (user, app_id, pushkey); the same (app_id, pushkey) may belong to
-- several users only when a client asked to `append`.

CREATE TABLE pushers (
    user_id             TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT,
    lang                TEXT NOT NULL,
    data                TEXT NOT NULL,   -- JSON: url, format, ...
    device_id           TEXT,            -- the device that registered it
    created_ts          INTEGER NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers (app_id, pushkey);

-- The push outbox: notifications decided but not yet accepted by a gateway.
-- Written before any attempt, deleted on success or when given up, so a
-- crash loses none.
CREATE TABLE push_outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    pushkey     TEXT NOT NULL,
    url         TEXT NOT NULL,
    body        TEXT NOT NULL,    -- the gateway request, JSON
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_ts     INTEGER NOT NULL
);
CREATE INDEX push_outbox_due ON push_outbox (next_ts);
