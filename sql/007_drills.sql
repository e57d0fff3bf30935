-- Drills: the real alarm chain run on purpose (fastagi/domain/drill.py). A drill is an
-- alarm row flagged `drill`, so paging, leadership and deactivation work on it unchanged;
-- its key is 'drill:department:<id>', so it never takes the place of a real alarm of the
-- department (alarms_one_active_per_key keeps one active drill and one active real alarm
-- per department apart), and statistics leave it out by the flag.

ALTER TABLE alarms DROP CONSTRAINT alarms_alarm_key_check;
ALTER TABLE alarms ADD CONSTRAINT alarms_alarm_key_check
    CHECK (alarm_key ~ '^(drill:)?(department|extension):.');

ALTER TABLE alarms
    ADD COLUMN drill boolean NOT NULL DEFAULT false,
    -- Page cycles before the drill stops by itself.
    ADD COLUMN drill_cycles integer CHECK (drill_cycles BETWEEN 1 AND 20),
    -- The devices it pages; NULL: the department's paging group.
    -- (Each as paging_group_devices.device; joined with a space, which no device holds.)
    ADD COLUMN drill_devices text[]
        CHECK (array_to_string(drill_devices, ' ')
               ~ '^[A-Za-z0-9_]+/[A-Za-z0-9_.@:+-]+( [A-Za-z0-9_]+/[A-Za-z0-9_.@:+-]+)*$'),
    -- Whether the emergency destinations are called too.
    ADD COLUMN drill_emergency boolean NOT NULL DEFAULT false,
    -- Who started it: 'cli:<user>', 'extension <ext>', 'schedule'.
    ADD COLUMN drill_requested_by text,
    -- The slot of a scheduled drill: its claim (below).
    ADD COLUMN drill_scheduled_for timestamptz,
    ADD CONSTRAINT alarms_drill_fields CHECK (
        (drill = (alarm_key LIKE 'drill:%'))
        AND (drill = (drill_cycles IS NOT NULL))
        AND (drill = (drill_requested_by IS NOT NULL))
        AND (drill OR (drill_devices IS NULL AND NOT drill_emergency
                       AND drill_scheduled_for IS NULL))
    );

-- Every server of a site runs the same schedule; the first to insert the slot's drill
-- runs it, the others' inserts conflict here and do nothing (deactivated drills count:
-- a server whose clock is late does not run the slot again).
CREATE UNIQUE INDEX alarms_one_drill_per_slot ON alarms (alarm_key, drill_scheduled_for)
    WHERE drill_scheduled_for IS NOT NULL;
-- Real alarm statistics leave drills out.
CREATE INDEX alarms_real_by_time ON alarms (activated_at) WHERE NOT drill;
