"""The web console for tests: served on a free loopback port over a test's database (or
beside a whole FastAGI server against the sandbox), with users of each role made
through fastagi/admin, as ``fastagi user add`` does."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from pydantic import SecretStr

from fastagi.admin import users
from fastagi.config import (
    AlarmSettings,
    DatabaseSettings,
    JournalSettings,
    Settings,
    WebSettings,
)
from fastagi.store import Stores
from fastagi.web.server import Console, serving_console
from fastagi_dev.sandbox import Sandbox
from fastagi_dev.sandbox.ports import free_port
from fastagi_dev.sandbox.settings import server_settings as sandbox_server_settings

# name -> (role, password)
USERS = {
    "vera": ("viewer", "viewer-password"),
    "otto": ("operator", "operator-password"),
    "ada": ("admin", "admin-password"),
}


def web_settings(dsn: str, **web: Any) -> Settings:
    """A console alone over ``dsn`` (no FastAGI server), on a free port."""
    return Settings(
        database=DatabaseSettings(dsn=SecretStr(dsn)),
        journal=JournalSettings(directory=None),
        web=WebSettings(**{"enabled": True, "port": 0, **web}),
    )


def server_settings(sandbox: Sandbox, agi_port: int, dsn: str, **web: Any) -> Settings:
    """``fastagi serve`` with the console against the sandbox: short pages (about 2 s),
    so cycles are seconds apart; the console on a free port of its own."""
    return sandbox_server_settings(
        sandbox,
        agi_port,
        dsn,
        alarm=AlarmSettings(
            lead_in=0.3, announcement="Panic {extension}.", page_timeout=5, takeover_interval=1
        ),
        web=WebSettings(**{"enabled": True, "port": free_port(socket.SOCK_STREAM), **web}),
    )


def url_of(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.web.port}"


async def add_users(stores: Stores) -> None:
    for name, (role, password) in USERS.items():
        await users.add_user(stores, name, role, password, by="test")


@contextlib.asynccontextmanager
async def console_over(
    pool: asyncpg.Pool[asyncpg.Record], settings: Settings
) -> AsyncIterator[Console]:
    async with serving_console(settings, pool) as console:
        yield console
