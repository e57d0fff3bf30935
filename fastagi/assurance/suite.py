"""Every check, in the order ``fastagi check`` prints them: from the database up to the
people who are told."""

from __future__ import annotations

from fastagi.assurance import (
    asterisk,
    configuration,
    database,
    devices,
    journal,
    notify,
    prompts,
    recordings,
)
from fastagi.assurance.runner import Check

CHECKS: tuple[Check, ...] = (
    *database.CHECKS,
    *asterisk.CHECKS,
    devices.CHECKS[0],  # paging-devices
    *prompts.CHECKS,
    *recordings.CHECKS,
    *journal.CHECKS,
    *notify.CHECKS,
    *configuration.CHECKS,
    *devices.CHECKS[1:],  # unknown-extension, emergency
)
