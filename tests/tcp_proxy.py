"""A loopback TCP proxy that can turn the connections through it half-open.

``stall()`` makes every connection open at that moment a black hole: both sockets stay
open, bytes in either direction are read and dropped, nothing is closed, so neither end
sees an error: what a peer sees when the other host is gone without a RST (power cut,
cable pulled, a firewall that forgot the flow). Connections made after ``stall()`` are
forwarded normally, so a client that detects the stall and reconnects gets through.
"""

from __future__ import annotations

import asyncio
import contextlib


class _Pair:
    def __init__(self) -> None:
        self.stalled = False
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []


class StallingProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self.port = 0
        self.accepted_at: list[float] = []  # loop time of each accepted connection

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self) -> int:
        """Black-hole every open connection; return how many there were."""
        for pair in self._pairs:
            pair.stalled = True
        return len(self._pairs)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in list(self._pairs):
            for task in pair.tasks:
                task.cancel()
            for writer in pair.writers:
                writer.close()
        self._pairs.clear()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted_at.append(asyncio.get_running_loop().time())
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        pair = _Pair()
        pair.writers = [writer, up_writer]
        self._pairs.add(pair)
        pair.tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, pair)),
            asyncio.create_task(self._pipe(up_reader, writer, pair)),
        ]
        await asyncio.gather(*pair.tasks, return_exceptions=True)
        self._pairs.discard(pair)
        for each in pair.writers:
            each.close()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if pair.stalled:
                    continue  # dropped: the other end hears nothing, and no FIN either
                writer.write(data)
                await writer.drain()
            if pair.stalled:
                # A half-open peer never closes: keep the other side open until close().
                await asyncio.Event().wait()
            writer.close()  # pass the close on
