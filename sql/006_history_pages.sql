-- The history's pages (the web console's history, `fastagi history export`): keyset
-- pages of a period, newest or oldest first, by (occurred_at, id), optionally of one
-- kind, department or extension. Each is read from an index in order, so a page deep in
-- a large history costs what the first one does (tests/db/test_history_pages.py).

-- (occurred_at, id) replaces (occurred_at): it also orders the events of one instant.
DROP INDEX alarm_events_time;
CREATE INDEX alarm_events_time ON alarm_events (occurred_at, id);
CREATE INDEX alarm_events_kind_time ON alarm_events (kind, occurred_at, id);
-- Department and extension texts are indexed by their first 100 characters
-- (fastagi/store/history.py INDEXED_TEXT): an index entry may not exceed about 2.7 kB,
-- and an event must never be refused for the length of a name.
CREATE INDEX alarm_events_department_time
    ON alarm_events (left(department, 100), occurred_at, id);
CREATE INDEX alarm_events_extension_time
    ON alarm_events (left(extension, 100), occurred_at, id);
