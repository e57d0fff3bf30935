-- Foundation: the connectivity probe. A call to the probe route records what Asterisk
-- told us about it, so an installer can see that dialplan -> FastAGI -> database works.
-- The alarm schema arrives in later migrations.

CREATE TABLE probe_calls (
    id bigserial PRIMARY KEY,
    uniqueid text NOT NULL,          -- Asterisk's agi_uniqueid of the call
    channel text,
    callerid text,
    calleridname text,
    digits text NOT NULL,            -- what the caller keyed in ('' for none)
    route text,                      -- agi_network_script: route and query, 'probe?source=dialplan'
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX probe_calls_created_at_idx ON probe_calls (created_at DESC);
