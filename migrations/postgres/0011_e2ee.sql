-- Devices and end-to-end encryption (issue 19): where each device was last
-- seen, its identity and one-time keys, cross-signing keys and signatures,
-- the device-list and to-device streams, user-interactive-auth sessions and
-- server-side key backups. Written by the relational core (store/sql/e2ee*); the embedded twin is
-- migrations/sqlite/0014_e2ee.sql.

ALTER TABLE devices ADD COLUMN last_seen_ip TEXT;
ALTER TABLE devices ADD COLUMN last_seen_ts BIGINT;

-- The new streams' counters, in the table the other streams use (see
-- 0001_init.sql): a writer bumps its stream's row in the transaction that
-- writes the positioned rows, so positions commit in order.
INSERT INTO stream_positions (name, pos) VALUES ('device_lists', 0), ('to_device', 0);

-- A device's identity keys as the device signed them (JSON, kept whole).
CREATE TABLE device_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    keys      TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys, each claimed (deleted) once.
CREATE TABLE one_time_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key       TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- One fallback key per device and algorithm, handed out when the one-time
-- keys run out; `used` once it has been.
CREATE TABLE fallback_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key       TEXT NOT NULL,
    used      BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- A user's master, self-signing and user-signing keys (JSON, kept whole).
CREATE TABLE cross_signing_keys (
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    keys    TEXT NOT NULL,
    PRIMARY KEY (user_id, kind)
);

-- Signatures uploaded later for a key (`key_id` is a device id or a
-- cross-signing public key) of `user_id`, by `signer`'s `signer_key_id`.
CREATE TABLE key_signatures (
    user_id       TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    signer        TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature     TEXT NOT NULL,
    PRIMARY KEY (user_id, key_id, signer, signer_key_id)
);

-- Whose devices or keys changed, in order: syncs and /keys/changes read it.
CREATE TABLE device_list_changes (
    stream  BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL
);

-- Each device's to-device inbox, until its client acknowledges a position.
CREATE TABLE to_device (
    stream    BIGINT PRIMARY KEY,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender    TEXT NOT NULL,
    type      TEXT NOT NULL,
    content   TEXT NOT NULL
);
CREATE INDEX to_device_inbox ON to_device (user_id, device_id, stream);

-- To-device messages for other servers' users, as the EDU that carries
-- them (its message_id makes a resend harmless), until that server takes
-- the transaction: queued in the same transaction as the sender's txn id,
-- sent again after a restart.
CREATE TABLE outbound_to_device (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination TEXT NOT NULL,
    edu         TEXT NOT NULL
);

-- Transaction ids of sendToDevice, so a retry is not delivered twice.
CREATE TABLE to_device_txns (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    ts        BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX to_device_txns_ts ON to_device_txns (ts);

-- User-interactive authentication in progress: the stages a session has
-- completed, for which user and which operation, until it expires.
CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    operation  TEXT NOT NULL,
    completed  TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);

-- Server-side key backups: versions of a user's backup, and the encrypted
-- session keys in each. `etag` grows with every change of a version's keys.
CREATE TABLE backup_versions (
    user_id   TEXT NOT NULL,
    version   BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag      BIGINT NOT NULL,
    deleted   BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE backup_keys (
    user_id    TEXT NOT NULL,
    version    BIGINT NOT NULL,
    room_id    TEXT NOT NULL,
    session_id TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
