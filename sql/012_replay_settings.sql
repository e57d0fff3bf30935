-- Replaying an alarm: the server's [alarm] settings that shaped it (lead-in, page
-- timeout, announcement template, ...: fastagi/config AlarmSettings.REPLAYED), kept with
-- the directory snapshot, so that a replay on a machine with other defaults pages as the
-- original did. No secret is among them. NULL: taken before this migration.
ALTER TABLE alarm_snapshots ADD COLUMN settings jsonb;
