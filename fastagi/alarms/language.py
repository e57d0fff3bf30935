"""Which language an alarm's pages speak: its department's, else the site's."""

from __future__ import annotations

from fastagi.config import AlarmSettings, DrillSettings
from fastagi.domain.directory import Directory
from fastagi.domain.language import Languages, Speech


def language_for(
    department_id: int | None,
    directory: Directory | None,
    languages: Languages,
    settings: AlarmSettings,
    drill_settings: DrillSettings | None = None,
) -> Speech:
    """The announcement template and voice of an alarm of ``department_id`` (None: of
    no department). Without a directory yet (PostgreSQL down since start-up), English:
    an alarm speaks some language rather than none."""
    department = directory.department(department_id) if directory and department_id else None
    code = (department.language if department else None) or (
        directory.default_language if directory else None
    )
    return languages.speech(
        code,
        settings.announcement,
        drill_settings.announcement if drill_settings is not None else None,
    )
