"""The web console for tests: served on a free loopback port over a test's database,
with users of each role made through fastagi/admin (as ``fastagi user add`` does)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from pydantic import SecretStr

from fastagi.admin import users
from fastagi.config import DatabaseSettings, JournalSettings, Settings, WebSettings
from fastagi.store import Stores
from fastagi.web.server import Console, serving_console

# name -> (role, password)
USERS = {
    "vera": ("viewer", "viewer-password"),
    "otto": ("operator", "operator-password"),
    "ada": ("admin", "admin-password"),
}


def web_settings(dsn: str, **web: Any) -> Settings:
    return Settings(
        database=DatabaseSettings(dsn=SecretStr(dsn)),
        journal=JournalSettings(directory=None),
        web=WebSettings(enabled=True, port=0, **web),
    )


async def add_users(stores: Stores) -> None:
    for name, (role, password) in USERS.items():
        await users.add_user(stores, name, role, password, by="test")


@contextlib.asynccontextmanager
async def console_over(
    pool: asyncpg.Pool[asyncpg.Record], settings: Settings
) -> AsyncIterator[Console]:
    async with serving_console(settings, pool) as console:
        yield console
