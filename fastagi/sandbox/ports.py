"""Free ports on 127.0.0.1 for sandbox instances that must not collide.

A port found free can be taken by someone else before Asterisk binds it; the sandbox
checks again at launch and fails with a clear message, so the race costs a retry, never
a confusing failure.
"""

from __future__ import annotations

import secrets
import socket

from fastagi.sandbox.instance import PAGING_PHONES, SandboxPorts, port_in_use

# Above the usual ephemeral range start (32768) ports come and go with every outgoing
# connection, so search below it.
_SEARCH_LOW = 20000
_SEARCH_HIGH = 32000
RTP_PORTS_PER_INSTANCE = 200


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel hands out as free right now (``kind``: SOCK_STREAM/SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _free_block(size: int, kinds: tuple[int, ...], avoid: range | None = None) -> int:
    """The first port of ``size`` consecutive ports, all free for every socket kind."""
    for _ in range(200):
        start = _SEARCH_LOW + secrets.randbelow(_SEARCH_HIGH - _SEARCH_LOW - size)
        block = range(start, start + size)
        if avoid is not None and (block.start < avoid.stop and avoid.start < block.stop):
            continue
        if not any(port_in_use(port, kind) for port in block for kind in kinds):
            return start
    raise RuntimeError(f"no block of {size} free ports between {_SEARCH_LOW} and {_SEARCH_HIGH}")


def pick_sandbox_ports() -> SandboxPorts:
    """Ports for a throwaway instance: SIP and AMI from the kernel, a free block of 100
    ports for paging phones 200-299 (``phone_base + 2NN``), and an RTP block."""
    base_block = _free_block(len(PAGING_PHONES), (socket.SOCK_DGRAM,))
    phone_base = base_block - PAGING_PHONES.start
    phones = range(base_block, base_block + len(PAGING_PHONES))
    rtp_start = _free_block(RTP_PORTS_PER_INSTANCE + 1, (socket.SOCK_DGRAM,), avoid=phones)
    # RTP takes even ports (RTCP the odd one above); res_rtp_asterisk rounds an odd start.
    rtp_start += rtp_start % 2
    while True:
        sip = free_port(socket.SOCK_DGRAM)
        ami = free_port(socket.SOCK_STREAM)
        if sip not in phones and ami != sip:
            break
    return SandboxPorts(
        sip=sip,
        ami=ami,
        rtp_start=rtp_start,
        rtp_end=rtp_start + RTP_PORTS_PER_INSTANCE - 1,
        phone_base=phone_base,
    )
