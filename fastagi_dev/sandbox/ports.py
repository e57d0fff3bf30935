"""Free ports on 127.0.0.1 for sandbox instances that must not collide.

A throwaway instance needs, besides its SIP and AMI sockets, two blocks of UDP ports
that nothing binds while it boots: the 100 ports its paging phones 200-299 will listen
on (``phone_base + 2NN``, bound later by each test's SIPp), and its RTP range (bound by
Asterisk per call). Checking that they are free cannot keep two instances booting at the
same moment (pytest-xdist workers) from choosing overlapping blocks, so both blocks come
from one numbered slot, and a slot is claimed by binding an abstract unix socket named
after it: the kernel lets one process at a time hold the name, and releases it when the
holder closes it or dies, so a killed session leaves no stale claim behind.

SIP and AMI ports come from the kernel; a port found free can be taken by someone else
before Asterisk binds it, and the sandbox checks again at launch and fails with a clear
message, so the race costs a retry, never a confusing failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path
from types import TracebackType

from fastagi_dev.sandbox.instance import PAGING_PHONES, SandboxPorts, port_in_use

# Above the usual ephemeral range start (32768) ports come and go with every outgoing
# connection, so search below it.
_SEARCH_LOW = 20000
_SEARCH_HIGH = 32000
RTP_PORTS_PER_INSTANCE = 200
# One slot: the paging phones' block, then the RTP block (RTCP takes the odd port above
# the last RTP port), with room to spare.
SLOT_SIZE = 400
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


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel hands out as free right now (``kind``: SOCK_STREAM/SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class PortClaim:
    """The ports of one instance, its slot held against every other process until
    ``close()`` (or ``with``): close it once the instance has stopped."""

    def __init__(self, ports: SandboxPorts, holder: socket.socket) -> None:
        self.ports = ports
        self._holder = holder

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
    """Ports for a throwaway instance: SIP and AMI from the kernel, and a slot no other
    claim holds, whose paging-phone and RTP ports are all free right now."""
    order = list(SLOTS)
    # Start at a random slot: sessions that start together rarely try the same one first.
    first = secrets.randbelow(len(order))
    for start in order[first:] + order[:first]:
        holder = _claim_slot(start)
        if holder is None:
            continue
        # Something outside these claims (another program) may use ports of the slot.
        if any(port_in_use(port, socket.SOCK_DGRAM) for port in range(start, start + SLOT_SIZE)):
            holder.close()
            continue
        # Even, as RTP wants (res_rtp_asterisk rounds an odd start): so are both terms.
        rtp_start = start + len(PAGING_PHONES)
        ports = SandboxPorts(
            sip=_free_outside(socket.SOCK_DGRAM),
            ami=_free_outside(socket.SOCK_STREAM),
            rtp_start=rtp_start,
            rtp_end=rtp_start + RTP_PORTS_PER_INSTANCE - 1,
            phone_base=start - PAGING_PHONES.start,
        )
        return PortClaim(ports, holder)
    raise RuntimeError(
        f"no free slot of {SLOT_SIZE} ports between {_SEARCH_LOW} and {_SEARCH_HIGH}"
    )


def _free_outside(kind: int) -> int:
    """A kernel-chosen free port outside every slot (the ephemeral range is above them)."""
    while True:
        port = free_port(kind)
        if not _SEARCH_LOW <= port < _SEARCH_HIGH:
            return port
