-- What the caller hears (issue 13): how discreetly the trigger asks for a confirmation,
-- and in which language, per department; NULL: the site's default in alarm_settings.
-- A language is a catalogue's code (fastagi/config/catalogues/<code>.toml); one without
-- a catalogue is spoken in English, and `fastagi check` says so.
ALTER TABLE alarm_settings
    ADD COLUMN confirmation_mode text NOT NULL DEFAULT 'voice'
        CHECK (confirmation_mode IN ('voice', 'neutral', 'tone', 'display', 'none')),
    ADD COLUMN default_language text NOT NULL DEFAULT 'en'
        CHECK (default_language ~ '^[a-z]{2,3}(-[a-z0-9]{1,8})?$');

ALTER TABLE departments
    ADD COLUMN confirmation_mode text
        CHECK (confirmation_mode IN ('voice', 'neutral', 'tone', 'display', 'none')),
    ADD COLUMN language text
        CHECK (language ~ '^[a-z]{2,3}(-[a-z0-9]{1,8})?$');
