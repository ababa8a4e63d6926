-- Media uploaded to this server. The bytes live in the media store (files or
-- S3) under content/<media_id>; this is what the server knows about them.

CREATE TABLE media (
    media_id         TEXT PRIMARY KEY,
    uploader         TEXT NOT NULL,
    content_type     TEXT,
    filename         TEXT,
    size             INTEGER,          -- NULL while pending
    sha256           TEXT,             -- lower-case hex, NULL while pending
    created_ts       INTEGER NOT NULL,
    pending_until_ts INTEGER           -- set while reserved by POST /create
);
CREATE INDEX media_pending ON media (uploader, pending_until_ts)
    WHERE pending_until_ts IS NOT NULL;
