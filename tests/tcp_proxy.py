"""A loopback TCP proxy that can turn the connections through it half-open.

``stall()`` makes every connection open at that moment a black hole: both sockets stay
open, bytes in either direction are read and dropped, nothing is closed, so neither end
sees an error: what a peer sees when the other host is gone without a RST (power cut,
cable pulled, a firewall that forgot the flow). Connections made after ``stall()`` are
forwarded normally, so a client that detects the stall and reconnects gets through.

``close()`` ends every connection, including one accepted while it runs: each
connection's handler owns its two sockets and closes them however it ends, and
``close()`` cancels the handlers and waits for them. (A handler still connecting
upstream when the test ended used to open its upstream socket after ``close()`` and
leave it to the garbage collector: a ResourceWarning in whichever later test collected
it.)
"""

from __future__ import annotations

import asyncio
import contextlib


class _Pair:
    def __init__(self) -> None:
        self.stalled = False


class StallingProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = False
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
        """Stop accepting, end every connection and return once all are closed."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        while self._handlers:
            handlers = list(self._handlers)
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        writers = [writer]
        pair = _Pair()
        try:
            if self._closing:
                return
            self.accepted_at.append(asyncio.get_running_loop().time())
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
            except OSError:
                return
            writers.append(up_writer)
            self._pairs.add(pair)
            async with asyncio.TaskGroup() as pipes:
                pipes.create_task(self._pipe(reader, up_writer, pair))
                pipes.create_task(self._pipe(up_reader, writer, pair))
        finally:
            self._pairs.discard(pair)
            for each in writers:
                each.close()
            for each in writers:
                with contextlib.suppress(OSError):
                    await each.wait_closed()
            self._handlers.discard(task)

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
