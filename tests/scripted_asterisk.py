"""Asterisk's side of FastAGI for flow unit tests: a Transport that answers each command
with the next scripted reply line, as a socket would (on a later loop iteration)."""

from __future__ import annotations

import asyncio
from collections import deque


class ScriptedAsterisk:
    """``commands`` keeps what the flow sent, one decoded line each; when the replies run
    out, Asterisk closes the connection (as after a hang-up)."""

    def __init__(self, *replies: str, greeting: bytes) -> None:
        self.commands: list[str] = []
        self._replies = deque(replies)
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._pending = b""
        self._inbox.put_nowait(greeting)

    async def receive(self, max_bytes: int) -> bytes:
        if not self._pending:
            self._pending = await self._inbox.get()
            if not self._pending:
                return b""
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def send(self, data: bytes) -> None:
        self.commands.append(data.decode().rstrip("\n"))
        reply = self._replies.popleft().encode() if self._replies else b""
        asyncio.get_running_loop().call_soon(self._inbox.put_nowait, reply)

    @property
    def unused(self) -> int:
        return len(self._replies)
