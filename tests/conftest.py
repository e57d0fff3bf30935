"""Shared fixtures live in plugin modules: tests/pg.py (PostgreSQL) and
tests/sandbox_fixtures.py (the sandbox Asterisk and SIPp)."""

import importlib.util

# TEMPORARY while the plugins are being written; becomes a static list.
pytest_plugins = [
    name
    for name in ("tests.pg", "tests.sandbox_fixtures")
    if importlib.util.find_spec(name) is not None
]
