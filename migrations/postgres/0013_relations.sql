-- Relations (edits, threads, replies in threads, references): the event an
-- event relates to, indexed where there is one, so that an event's
-- relations and the summaries bundled with it are index reads.
CREATE INDEX events_relates_to ON events (((pdu::jsonb) -> 'content' -> 'm.relates_to' ->> 'event_id'), stream)
    WHERE ((pdu::jsonb) -> 'content' -> 'm.relates_to' ->> 'event_id') IS NOT NULL;
