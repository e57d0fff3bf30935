"""Tests against the real programs the server and the tools start on this machine
(espeak-ng and sox renders, SIPp, the benchmarks' child servers), without Asterisk or
PostgreSQL. They take seconds where a unit test takes milliseconds, so they live apart
from tests/unit, which stays quick enough to run again and again while working."""
