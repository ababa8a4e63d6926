-- One node (no cluster bus): the stream position through which every
-- event's pushes were decided, saved about once a second. After a crash the
-- decider reads the events after it from the store, so an event committed
-- but not yet decided still gets its pushes (push_decided keeps those
-- already queued from being queued twice).
CREATE TABLE push_caught_up (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    stream INTEGER NOT NULL
);
