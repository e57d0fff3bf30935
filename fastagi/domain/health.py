"""When a run of scheduled checks changes the site's health: a hysteresis, so that one
failed run (a phone rebooting, a slow answer) lights nothing, and a check that fails
every other run neither raises nor clears anything.

Theory of operation. Each run of checks ends with one observation: failing (some check's
last result is FAIL) or passing. ``raise_after`` failing observations in a row make the
state DEGRADED; ``clear_after`` passing ones in a row make it HEALTHY. Any other run resets
the opposite streak. The state starts UNKNOWN and settles on whichever streak completes
first, so a server started on a broken site says so, and one started on a working site
says so too (another server may have left the site marked degraded).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Health(enum.Enum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    DEGRADED = "degraded"


@dataclass
class Hysteresis:
    raise_after: int
    clear_after: int
    state: Health = Health.UNKNOWN
    failing_streak: int = 0
    passing_streak: int = 0

    def __post_init__(self) -> None:
        if self.raise_after < 1 or self.clear_after < 1:
            raise ValueError("raise_after and clear_after must be at least 1")

    def observe(self, failing: bool) -> Health | None:
        """Take one run's observation; the new state when it changed, else None."""
        if failing:
            self.failing_streak += 1
            self.passing_streak = 0
            if self.failing_streak >= self.raise_after and self.state is not Health.DEGRADED:
                self.state = Health.DEGRADED
                return self.state
        else:
            self.passing_streak += 1
            self.failing_streak = 0
            if self.passing_streak >= self.clear_after and self.state is not Health.HEALTHY:
                self.state = Health.HEALTHY
                return self.state
        return None
