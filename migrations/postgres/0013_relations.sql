-- Relations (edits, threads, replies in threads, references): the event an
-- event relates to, indexed where there is one, so that an event's
-- relations and the summaries bundled with it are index reads.
--
-- jsonb cannot hold U+0000, which a JSON string may escape as \u0000: the
-- cast would fail and with it the insert. The escape is swapped for \u0020
-- first (six characters for six, so the text stays valid JSON whether the
-- sequence is an escape or follows an escaped backslash).
CREATE INDEX events_relates_to ON events (((replace(pdu, '\u0000', '\u0020')::jsonb) -> 'content' -> 'm.relates_to' ->> 'event_id'), stream)
    WHERE ((replace(pdu, '\u0000', '\u0020')::jsonb) -> 'content' -> 'm.relates_to' ->> 'event_id') IS NOT NULL;
