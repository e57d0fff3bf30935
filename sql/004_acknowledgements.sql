-- The emergency call's acknowledgement (fastagi/alarms/emergency.py): a responder who
-- answered an emergency call and pressed 1. At most one per alarm: the first one wins,
-- later presses (a second destination answering in parallel) change nothing here.
-- Written by whichever server's AGI flow took the call; read by the server that places
-- the calls, which stops calling once the row exists.
CREATE TABLE alarm_acknowledgements (
    alarm_id bigint PRIMARY KEY REFERENCES alarms (id),
    acknowledged_at timestamptz NOT NULL DEFAULT now(),
    -- The destination that was called (a dial string such as PJSIP/150), as the server
    -- placed it: who acknowledged.
    acknowledged_by text NOT NULL CHECK (acknowledged_by <> ''),
    -- The attempt (the Originate's ChannelId) and the answering channel's name.
    attempt text,
    channel text
);
