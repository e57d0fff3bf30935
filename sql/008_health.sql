-- The site's health as the scheduled checks see it (fastagi/assurance/watch.py): each
-- server reports its own view every run; the site is degraded while a fresh report
-- says so. The one row of health_state changes in the transaction that records its
-- health_degraded or health_recovered event, so with several servers each transition
-- is told (e-mail, history) exactly once.
CREATE TABLE health_reports (
    instance_id text PRIMARY KEY,
    degraded boolean NOT NULL,
    -- The checks whose last result is FAIL, with their messages: [{"name", "message"}].
    failing jsonb NOT NULL DEFAULT '[]',
    reported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE health_state (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    degraded boolean NOT NULL DEFAULT false,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO health_state DEFAULT VALUES;
