"""What the console's handlers find on the application (aiohttp's typed keys)."""

from __future__ import annotations

from aiohttp import web

from fastagi.config import Settings
from fastagi.store import Stores
from fastagi.web.feed import BoardFeed

SETTINGS = web.AppKey("settings", Settings)
STORES = web.AppKey("stores", Stores)
FEED = web.AppKey("feed", BoardFeed)
