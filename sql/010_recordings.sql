-- Recorded locations (issue 13, part 3): a staff member's own recording of where they
-- are ("Room 12, second floor, east wing"), paged instead of the spoken department and
-- extension. One per extension and one per department at most; the page prefers the
-- caller's extension's, then the department's.
--
-- The audio is a file in [recording] directory (the sounds directory as Asterisk sees
-- it); this row says which file is current. A new recording is written under a new
-- name and becomes current by replacing the row in one statement, so a page reads
-- either the old file or the new one, never half of one; the old file is removed after.

CREATE TABLE recorded_locations (
    id bigserial PRIMARY KEY,
    extension text UNIQUE CHECK (extension ~ '^[0-9]{1,20}$'),
    department_id integer UNIQUE REFERENCES departments (id) ON DELETE CASCADE,
    -- The file's name in the recordings directory, without a directory.
    file_name text NOT NULL UNIQUE CHECK (file_name ~ '^[A-Za-z0-9_.-]+\.wav$'),
    seconds real NOT NULL CHECK (seconds > 0),
    -- 'extension 101' (by phone), 'cli:<user>', 'web:<user>'.
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((extension IS NULL) <> (department_id IS NULL))
);

-- The rows as the store reads them: with the department's name.
CREATE VIEW recorded_location_list AS
    SELECT r.id, r.extension, r.department_id, d.name AS department, r.file_name, r.seconds,
        r.recorded_by, r.recorded_at
    FROM recorded_locations r LEFT JOIN departments d ON d.id = r.department_id;
