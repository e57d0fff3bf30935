"""SIPp helpers for tests; they live in the package so that ``fastagi demo`` uses them too."""

from fastagi.sandbox.sipp import *  # noqa: F403
from fastagi.sandbox.sipp import MAX_DIGITS, SCENARIOS  # noqa: F401
