"""A FastAGI abuse flood, run in its own process by tests/e2e/test_abuse_flood.py:

    python -m tests.e2e.flood_client HOST PORT --connections 2000 --duration 15

Opens every connection at once, each one a hostile client that reconnects as soon as
the server drops it, until ``--duration`` seconds have passed; then prints one JSON
line of counters on stdout and exits (hard exit 5 s later whatever happens). The mix:

- idle      connects and never sends a byte
- oversize  an environment block larger than the server's 64 KiB limit
- endless   environment lines without end, never the blank line
- slow      one byte a minute
- vanish    a valid environment for the ``probe`` route, then a reset once the first
            command arrives (a client vanishing mid-command)
- foreign   idle, from 127.0.0.2 (refused by an allow-list of 127.0.0.1/32)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import resource
import socket
import sys
import threading
import time

MIX = (
    ("idle", 30),
    ("oversize", 15),
    ("endless", 15),
    ("slow", 15),
    ("vanish", 15),
    ("foreign", 10),
)
RECONNECT_PAUSE = 0.05


def environment(number: int) -> bytes:
    lines = [
        "agi_network: yes",
        "agi_network_script: probe",
        "agi_request: agi://127.0.0.1/probe",
        f"agi_channel: PJSIP/flood-{number:08x}",
        f"agi_uniqueid: flood.{number}",
        "agi_callerid: 666",
        "agi_calleridname: flood",
    ]
    return ("\n".join(lines) + "\n\n").encode()


class Flood:
    def __init__(self, host: str, port: int, deadline: float) -> None:
        self.host = host
        self.port = port
        self.deadline = deadline
        self.counts: collections.Counter[str] = collections.Counter()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    async def open(self, kind: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        local = ("127.0.0.2", 0) if kind == "foreign" else None
        return await asyncio.open_connection(self.host, self.port, local_addr=local)

    async def client(self, kind: str, number: int) -> None:
        while self.left() > 0:
            writer = None
            try:
                async with asyncio.timeout(max(self.left(), 0.01)):
                    reader, writer = await self.open(kind)
                    self.counts[f"{kind}_connected"] += 1
                    await getattr(self, kind)(reader, writer, number)
                self.counts[f"{kind}_dropped_by_server"] += 1
            except TimeoutError:
                break
            except OSError as exc:
                self.counts[f"{kind}_{type(exc).__name__}"] += 1
            finally:
                if writer is not None:
                    writer.transport.abort()
            await asyncio.sleep(RECONNECT_PAUSE)

    async def until_closed(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass

    async def idle(self, reader, writer, number) -> None:
        await self.until_closed(reader)

    foreign = idle

    async def oversize(self, reader, writer, number) -> None:
        line = b"agi_arg_1: " + b"x" * 4000 + b"\n"
        writer.write(line * 20)  # 80 KB, past the 64 KiB limit
        await self.until_closed(reader)

    async def endless(self, reader, writer, number) -> None:
        chunk = b"agi_endless: yes\n" * 64
        with contextlib.suppress(OSError):
            while not reader.at_eof():
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0.01)
        await self.until_closed(reader)

    async def slow(self, reader, writer, number) -> None:
        for byte in environment(number):
            writer.write(bytes([byte]))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60):
                    await self.until_closed(reader)
                    return

    async def vanish(self, reader, writer, number) -> None:
        writer.write(environment(number))
        if await reader.readline():
            self.counts["vanish_got_command"] += 1
        # abort() in client()'s finally: a reset in the middle of the command.


async def run(host: str, port: int, connections: int, duration: float) -> dict[str, int]:
    flood = Flood(host, port, time.monotonic() + duration)
    weights = sum(weight for _, weight in MIX)
    kinds = [kind for kind, weight in MIX for _ in range(connections * weight // weights)]
    kinds += ["idle"] * (connections - len(kinds))
    tasks = [asyncio.create_task(flood.client(kind, n)) for n, kind in enumerate(kinds)]
    print(json.dumps({"started": len(tasks)}), flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    return dict(flood.counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=15.0)
    args = parser.parse_args()
    # 2,000 sockets need more than the usual 1024 open files.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    # The flood stops itself: a watchdog ends the process whatever the loop does.
    watchdog = threading.Timer(args.duration + 5, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    socket.setdefaulttimeout(args.duration)
    counts = asyncio.run(run(args.host, args.port, args.connections, args.duration))
    print(json.dumps(counts, sort_keys=True), flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
