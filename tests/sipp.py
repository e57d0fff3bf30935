"""SIPp helpers for tests; they live in fastagi_dev so that ``make demo`` uses them too."""

from fastagi_dev.sandbox.sipp import *  # noqa: F403
from fastagi_dev.sandbox.sipp import SCENARIOS  # noqa: F401
