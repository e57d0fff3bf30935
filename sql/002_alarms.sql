-- The panic alarm: departments, paging groups, alarms and their append-only history.

-- One row of settings the administrator edits while alarms run.
CREATE TABLE alarm_settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    default_interval_seconds integer NOT NULL DEFAULT 60
        CHECK (default_interval_seconds BETWEEN 5 AND 3600),
    -- What happens when the caller gives no valid answer to the confirmation prompt:
    -- hands-free triggers may not be able to answer, so 'activate' is a valid choice.
    no_answer_policy text NOT NULL DEFAULT 'activate'
        CHECK (no_answer_policy IN ('cancel', 'activate')),
    confirmation_attempts integer NOT NULL DEFAULT 3 CHECK (confirmation_attempts BETWEEN 1 AND 10),
    -- Wrong PINs allowed to one extension (within lockout_seconds, across calls), and
    -- how long it is locked out afterwards; lockout_seconds = 0 turns the lockout off.
    pin_attempts integer NOT NULL DEFAULT 3 CHECK (pin_attempts BETWEEN 1 AND 10),
    lockout_seconds integer NOT NULL DEFAULT 300 CHECK (lockout_seconds BETWEEN 0 AND 86400),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO alarm_settings DEFAULT VALUES;

CREATE TABLE paging_groups (
    id serial PRIMARY KEY,
    name text NOT NULL CHECK (name <> '' AND name = btrim(name))
);
-- Names are looked up ignoring case, so 'ER' and 'er' cannot both exist.
CREATE UNIQUE INDEX paging_groups_name ON paging_groups (lower(name));

-- A device is an Asterisk dial string such as PJSIP/201; Page() joins them with '&'.
CREATE TABLE paging_group_devices (
    group_id integer NOT NULL REFERENCES paging_groups (id) ON DELETE CASCADE,
    device text NOT NULL CHECK (device ~ '^[A-Za-z0-9_]+/[A-Za-z0-9_.@:+-]+$'),
    PRIMARY KEY (group_id, device)
);

CREATE TABLE departments (
    id serial PRIMARY KEY,
    name text NOT NULL CHECK (name <> '' AND name = btrim(name)),
    paging_group_id integer REFERENCES paging_groups (id) ON DELETE SET NULL,
    -- NULL: the global default interval applies.
    interval_seconds integer CHECK (interval_seconds BETWEEN 5 AND 3600)
);
CREATE UNIQUE INDEX departments_name ON departments (lower(name));

-- Which extensions belong to a department: an exact extension ('101'), a range
-- ('100-149'), or an Asterisk pattern ('_1XX'). The most specific match wins
-- (fastagi/alarms/directory.py, which also validates and canonicalises the text).
CREATE TABLE department_extensions (
    id serial PRIMARY KEY,
    department_id integer NOT NULL REFERENCES departments (id) ON DELETE CASCADE,
    pattern text NOT NULL UNIQUE CHECK (pattern ~ '^(_[0-9XZN\[\]\-]*[.!]?|[0-9]+(-[0-9]+)?)$')
);

CREATE TABLE alarms (
    id bigserial PRIMARY KEY,
    -- 'department:<id>' or, for an unknown extension, 'extension:<ext>': at most one
    -- active alarm per key; a second trigger is a re-trigger of the first.
    alarm_key text NOT NULL CHECK (alarm_key ~ '^(department|extension):.'),
    department_id integer REFERENCES departments (id) ON DELETE SET NULL,
    department_name text NOT NULL,
    extension text NOT NULL,
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'deactivated')),
    activated_at timestamptz NOT NULL DEFAULT now(),
    deactivated_at timestamptz,
    deactivated_by text,
    deactivation_reason text,
    cycles integer NOT NULL DEFAULT 0 CHECK (cycles >= 0),
    last_cycle_at timestamptz,
    -- Active exactly while it has no deactivation time.
    CHECK ((state = 'active') = (deactivated_at IS NULL))
);
CREATE UNIQUE INDEX alarms_one_active_per_key ON alarms (alarm_key) WHERE state = 'active';

-- Append-only: every step from trigger to deactivation.
CREATE TABLE alarm_events (
    id bigserial PRIMARY KEY,
    -- Idempotency key: events journalled while PostgreSQL was away are replayed once.
    event_id uuid NOT NULL UNIQUE,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    alarm_id bigint REFERENCES alarms (id),
    kind text NOT NULL CHECK (kind ~ '^[a-z_]+$'),  -- fastagi.alarms.events.EventKind
    extension text,
    department text,
    -- Never a PIN: HistoryEvent refuses a details key containing 'pin'.
    details jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object')
);
CREATE INDEX alarm_events_alarm ON alarm_events (alarm_id, occurred_at);
CREATE INDEX alarm_events_time ON alarm_events (occurred_at);

CREATE FUNCTION alarm_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'alarm_events is append-only';
END
$$;
CREATE TRIGGER alarm_events_no_update BEFORE UPDATE OR DELETE ON alarm_events
    FOR EACH ROW EXECUTE FUNCTION alarm_events_append_only();
CREATE TRIGGER alarm_events_no_truncate BEFORE TRUNCATE ON alarm_events
    FOR EACH STATEMENT EXECUTE FUNCTION alarm_events_append_only();

CREATE TABLE deactivators (
    extension text PRIMARY KEY CHECK (extension ~ '^[0-9]{1,20}$'),
    -- scrypt, with its parameters and salt in the string; the PIN itself is never stored.
    pin_hash text NOT NULL CHECK (pin_hash LIKE 'scrypt$%'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()  -- the PIN's last change
);

-- Wrong PINs per extension, across calls (hanging up does not reset them): a failure
-- older than lockout_seconds is forgotten; pin_attempts of them within that window lock
-- the extension out for lockout_seconds; a right PIN clears the count.
CREATE TABLE deactivation_lockouts (
    extension text PRIMARY KEY,
    failures integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_failure_at timestamptz,
    locked_until timestamptz
);
