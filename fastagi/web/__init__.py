"""The web console: live board, alarm pages and the operators' actions, served by the
FastAGI server's own process (aiohttp, in the same event loop) and read from PostgreSQL,
so every server's console shows the same thing.

An interface like the CLI: it changes nothing itself but through fastagi/admin, and
every query is in fastagi/store. ``running_console`` is what ``fastagi serve`` and
``make run`` start beside the FastAGI listener (fastagi/app.py ``running_server``).
"""

from fastagi.web.server import running_console

__all__ = ["running_console"]
