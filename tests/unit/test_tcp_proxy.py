"""The test suite's stalling TCP proxy (tests/tcp_proxy.py) leaves nothing open."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.tcp_proxy import StallingProxy


class Target:
    """A TCP server that counts the connections it has open."""

    def __init__(self) -> None:
        self.open = 0
        self.changed = asyncio.Condition()
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self.changed:
            self.open += 1
            self.changed.notify_all()
        try:
            while data := await reader.read(65536):
                writer.write(data)
        finally:
            writer.close()
            async with self.changed:
                self.open -= 1
                self.changed.notify_all()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(lambda: self.open == count)


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    target = Target()
    server = await asyncio.start_server(target.serve, "127.0.0.1", 0)
    target.port = server.sockets[0].getsockname()[1]
    async with server:
        yield target


@pytest.mark.parametrize("stalled", [False, True])
async def test_close_ends_every_connection_even_one_accepted_while_closing(
    target: Target, stalled: bool
) -> None:
    proxy = StallingProxy("127.0.0.1", target.port)
    await proxy.start()
    forwarded = await asyncio.open_connection("127.0.0.1", proxy.port)
    await target.until(1)
    if stalled:
        assert proxy.stall() == 1
    # Accepted by the kernel but not yet handled when close() begins: its handler is
    # still to connect upstream.
    late = await asyncio.open_connection("127.0.0.1", proxy.port)

    await proxy.close()

    # The clients never close their ends, yet the proxy has closed both of its sides of
    # both connections: each client reads EOF, the target sees no connection left.
    ends = [await end_of(reader) for reader, _ in (forwarded, late)]
    await target.until(0)
    assert ends == ["closed", "closed"]
    for _, writer in (forwarded, late):
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def end_of(reader: asyncio.StreamReader) -> str:
    try:
        async with asyncio.timeout(5):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass  # refused before it was handled: closed all the same
    except TimeoutError:
        return "still open"
    return "closed"
