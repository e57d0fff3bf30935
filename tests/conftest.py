"""Shared fixtures live in plugin modules: tests/pg.py (PostgreSQL) and
tests/sandbox_fixtures.py (the sandbox Asterisk and SIPp)."""

import importlib.util
import os
from typing import Any

# TEMPORARY while the plugins are being written; becomes a static list.
pytest_plugins = [
    name
    for name in ("tests.pg", "tests.sandbox_fixtures")
    if importlib.util.find_spec(name) is not None
]


if os.environ.get("FASTAGI_TEST_LOOP") == "uvloop":
    # Production runs on uvloop, whose transports are not asyncio's classes: make test
    # runs the unit tests a second time on it.
    import uvloop

    def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
        return {"uvloop": uvloop.new_event_loop}
