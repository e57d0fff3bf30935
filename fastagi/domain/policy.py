"""What an administrator sets while alarms run (sql/002_alarms.sql ``alarm_settings``),
and the bounds of every such value, checked before the database's own CHECKs so that a
refusal reads well."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

MIN_INTERVAL, MAX_INTERVAL = 5, 3600
MIN_ATTEMPTS, MAX_ATTEMPTS = 1, 10
MAX_LOCKOUT_SECONDS = 86400
NO_ANSWER_POLICIES = ("cancel", "activate")


@dataclass(frozen=True)
class Policy:
    default_interval_seconds: int
    no_answer_policy: str  # one of NO_ANSWER_POLICIES
    confirmation_attempts: int
    pin_attempts: int
    lockout_seconds: int
    updated_at: datetime
    # sql/009_language_modes.sql: the site's defaults, a department's own value wins.
    confirmation_mode: str = "voice"  # one of fastagi.domain.language.CONFIRMATION_MODES
    default_language: str = "en"
