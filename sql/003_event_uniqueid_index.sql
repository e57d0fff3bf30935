-- The calls of an alarm: AlarmStore.timeline() finds the events of the calls that
-- triggered, re-triggered and deactivated an alarm (recorded before, or without, the
-- alarm's id) by the Asterisk uniqueid in their details.

CREATE INDEX alarm_events_uniqueid ON alarm_events ((details ->> 'uniqueid'));
