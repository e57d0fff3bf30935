"""Free ports on 127.0.0.1 for sandbox instances that must not collide.

A throwaway instance needs its SIP and AMI sockets and two blocks of UDP ports that
nothing binds while it boots: the 100 ports its paging phones 200-299 will listen on
(``phone_base + 2NN``, bound later by each test's SIPp), and its RTP range (bound by
Asterisk per call). Checking that they are free cannot keep two instances booting at the
same moment (pytest-xdist workers) from choosing overlapping blocks, so every port comes
from one numbered slot, and a slot is claimed by binding an abstract unix socket named
after it: the kernel lets one process at a time hold the name, and releases it when the
holder closes it or dies, so a killed session leaves no stale claim behind.

The slots lie below the kernel's ephemeral range (32768 and up on Linux), where no
outgoing connection is ever given a port: a port found free in a claimed slot stays free
until its user binds it. A port the kernel hands out as free (``free_port``) has no such
guarantee: any connect() on the machine may take it before it is bound.

One slot, from its first port: paging phones 200-299 (100, UDP), RTP (1,000, UDP; RTCP
on each odd port), SIP (UDP), AMI (TCP), then spare TCP ports for the holder's own servers
(``PortClaim.tcp_port``: a FastAGI server, a PostgreSQL cluster); the UDP ports of the
same numbers are for the SIPp phones that call the instance (``Sandbox.caller_port``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path
from types import TracebackType

from fastagi_dev.sandbox.instance import PAGING_PHONES, SandboxPorts, free_port, port_in_use

__all__ = ["PortClaim", "claim_sandbox_ports", "free_port", "udp_ports_bound_by"]

# Above the usual ephemeral range start (32768) ports come and go with every outgoing
# connection, so search below it; 10000-10999 is the RTP range of `make run`'s instance.
_SEARCH_LOW = 12000
_SEARCH_HIGH = 32000
# One RTP session takes two ports (RTP, RTCP). 200 ports were 100 sessions: 100 alarms
# paging two phones each ran out ("Unable to create RTP instance", whole pages lost), and
# 200 alarms activated at once dial 400 legs together. 1,000 ports: 500 sessions. (A
# FreePBX site's default rtp.conf gives 10000-20000.)
RTP_PORTS_PER_INSTANCE = 1000
_SIP_OFFSET = len(PAGING_PHONES) + RTP_PORTS_PER_INSTANCE
_AMI_OFFSET = _SIP_OFFSET + 1
_SPARE_OFFSET = _AMI_OFFSET + 1
SLOT_SIZE = 1200
SPARE_TCP_PORTS = SLOT_SIZE - _SPARE_OFFSET
SLOTS = range(_SEARCH_LOW, _SEARCH_HIGH - SLOT_SIZE + 1, SLOT_SIZE)
_CLAIM_PREFIX = "fastagi-sandbox-ports-"


def udp_ports_bound_by(pid: int) -> set[int]:
    """The UDP ports the sockets of process ``pid`` are bound to (empty once it is gone).

    Read from /proc, never by binding: a probe that binds a port to learn whether it is
    taken holds it for that moment, and the process about to bind it fails (SIPp exits
    with "Unable to bind main socket, errno = 98").
    """
    inodes = set()
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return set()
    for descriptor in descriptors:
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(descriptor)
            if target.startswith("socket:["):
                inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in (Path("/proc/net/udp"), Path("/proc/net/udp6")):
        with contextlib.suppress(OSError):
            # "sl local_address rem_address st ... uid timeout inode ...", hex ADDR:PORT.
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class PortClaim:
    """The ports of one instance, its slot held against every other process until
    ``close()`` (or ``with``): close it once the instance has stopped."""

    def __init__(self, ports: SandboxPorts, holder: socket.socket, start: int) -> None:
        self.ports = ports
        self._holder = holder
        self._start = start

    def tcp_port(self, index: int) -> int:
        """Spare TCP port ``index`` (0 to ``SPARE_TCP_PORTS - 1``) of the slot, for a
        server of the holder's own (free when the slot was claimed)."""
        if not 0 <= index < SPARE_TCP_PORTS:
            raise IndexError(f"a slot has {SPARE_TCP_PORTS} spare TCP ports, not {index + 1}")
        return self._start + _SPARE_OFFSET + index

    def close(self) -> None:
        self._holder.close()

    def __enter__(self) -> PortClaim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _claim_slot(start: int) -> socket.socket | None:
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # A leading NUL: Linux's abstract namespace, no file to clean up.
        holder.bind(f"\0{_CLAIM_PREFIX}{start}")
    except OSError:
        holder.close()
        return None
    return holder


def claim_sandbox_ports() -> PortClaim:
    """The ports of a throwaway instance: a slot no other claim holds, whose ports are
    all free right now (UDP ones for a plain bind, TCP ones for a bind with SO_REUSEADDR,
    as Asterisk and asyncio bind: a TIME_WAIT left by an earlier holder is no obstacle)."""
    order = list(SLOTS)
    # Start at a random slot: sessions that start together rarely try the same one first.
    first = secrets.randbelow(len(order))
    for start in order[first:] + order[:first]:
        holder = _claim_slot(start)
        if holder is None:
            continue
        # Something outside these claims (another program) may use ports of the slot.
        if any(
            port_in_use(start + offset, kind)
            for offset, kind in [
                *((offset, socket.SOCK_DGRAM) for offset in range(SLOT_SIZE)),
                *((offset, socket.SOCK_STREAM) for offset in range(_AMI_OFFSET, SLOT_SIZE)),
            ]
        ):
            holder.close()
            continue
        # Even, as RTP wants (res_rtp_asterisk rounds an odd start): so are both terms.
        rtp_start = start + len(PAGING_PHONES)
        ports = SandboxPorts(
            sip=start + _SIP_OFFSET,
            ami=start + _AMI_OFFSET,
            rtp_start=rtp_start,
            rtp_end=rtp_start + RTP_PORTS_PER_INSTANCE - 1,
            phone_base=start - PAGING_PHONES.start,
            caller_start=start + _SPARE_OFFSET,
            caller_count=SLOT_SIZE - _SPARE_OFFSET,
        )
        return PortClaim(ports, holder, start)
    raise RuntimeError(
        f"no free slot of {SLOT_SIZE} ports between {_SEARCH_LOW} and {_SEARCH_HIGH}"
    )
