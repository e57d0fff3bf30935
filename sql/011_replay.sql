-- Replaying an alarm (issue 13, part 4): the directory and policy as they were when the
-- alarm began, kept with its history, so `fastagi history export --alarm ID --format
-- replay` can re-enact it after an administrator changed them. No PIN and no secret:
-- deactivators and users are not part of it.

-- What an alarm's department looked like (NULL department: an unknown extension), and
-- the site's policy row; built in SQL so the snapshot is one consistent read.
CREATE FUNCTION directory_snapshot(p_department_id integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'department', (
            SELECT jsonb_build_object(
                'name', d.name,
                'interval_seconds', d.interval_seconds,
                'paging_group', g.name,
                'devices', coalesce((
                    SELECT jsonb_agg(pd.device ORDER BY pd.device)
                    FROM paging_group_devices pd WHERE pd.group_id = d.paging_group_id
                ), '[]'::jsonb),
                'extensions', coalesce((
                    SELECT jsonb_agg(e.pattern ORDER BY e.pattern)
                    FROM department_extensions e WHERE e.department_id = d.id
                ), '[]'::jsonb)
            )
            FROM departments d LEFT JOIN paging_groups g ON g.id = d.paging_group_id
            WHERE d.id = p_department_id
        ),
        'policy', (
            SELECT jsonb_build_object(
                'default_interval_seconds', s.default_interval_seconds,
                'no_answer_policy', s.no_answer_policy,
                'confirmation_attempts', s.confirmation_attempts
            )
            FROM alarm_settings s
        )
    )
$$;

CREATE TABLE alarm_snapshots (
    alarm_id bigint PRIMARY KEY REFERENCES alarms (id) ON DELETE CASCADE,
    snapshot jsonb NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
