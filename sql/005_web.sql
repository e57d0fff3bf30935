-- The web console: its users, their sessions, failed logins, and the notification that
-- tells every server's live board that something it shows has changed.

CREATE TABLE web_users (
    id serial PRIMARY KEY,
    name text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    -- viewer: board, alarm pages, history; operator: + deactivate, interval, re-send;
    -- admin: + configuration and users.
    role text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    -- Argon2id, its parameters and salt in the string; the password itself never stored.
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Names are looked up ignoring case: 'Anna' and 'anna' cannot both exist.
CREATE UNIQUE INDEX web_users_name ON web_users (lower(name));

-- A login: the browser holds a random token (cookie); only its SHA-256 is kept here, so
-- a copy of this table logs nobody in. Removing the user ends its sessions at once, and
-- every request reads the user's role afresh.
CREATE TABLE web_sessions (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id integer NOT NULL REFERENCES web_users (id) ON DELETE CASCADE,
    -- The synchronizer token every POST of this session must carry.
    csrf_token text NOT NULL CHECK (length(csrf_token) >= 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    address text
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- Failed logins, counted per name and per client address within the console's
-- login_window: a login is refused (HTTP 429) beyond the limit, by every server alike.
-- A successful login forgets its name's failures. Each attempt is also in the history.
CREATE TABLE web_login_failures (
    id bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    user_name text NOT NULL,
    address text NOT NULL
);
CREATE INDEX web_login_failures_name ON web_login_failures (lower(user_name), occurred_at);
CREATE INDEX web_login_failures_address ON web_login_failures (address, occurred_at);
CREATE INDEX web_login_failures_time ON web_login_failures (occurred_at);

-- The live board: NOTIFY fastagi_board when what it shows changes: an alarm row, an
-- alarm's history event or a lamp's (not a login's), an acknowledgement. PostgreSQL
-- folds identical notifications of one transaction into one, so a burst (a journal
-- replay) is one message; the console coalesces further (fastagi/web/feed.py).
CREATE FUNCTION notify_board() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fastagi_board', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER alarms_board AFTER INSERT OR UPDATE ON alarms
    FOR EACH STATEMENT EXECUTE FUNCTION notify_board();
CREATE TRIGGER alarm_events_board AFTER INSERT ON alarm_events
    FOR EACH ROW WHEN (NEW.alarm_id IS NOT NULL OR NEW.kind = 'lamp_changed')
    EXECUTE FUNCTION notify_board();
CREATE TRIGGER alarm_acknowledgements_board AFTER INSERT OR UPDATE ON alarm_acknowledgements
    FOR EACH STATEMENT EXECUTE FUNCTION notify_board();

-- The board shows each lamp's last recorded state: the newest lamp_changed per device.
CREATE INDEX alarm_events_lamps ON alarm_events ((details ->> 'device'), occurred_at)
    WHERE kind = 'lamp_changed';
