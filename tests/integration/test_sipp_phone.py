"""SIPp paging phones come up on their port every time (SIPp itself, no Asterisk)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from fastagi_dev.sandbox.instance import Sandbox
from fastagi_dev.sandbox.ports import claim_sandbox_ports, udp_ports_bound_by
from fastagi_dev.sandbox.sipp import Phone

STARTS = 30


def test_udp_ports_bound_by_reads_a_process_sockets_without_binding() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
    ):
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        ports = udp_ports_bound_by(os.getpid())
        assert udp.getsockname()[1] in ports
        assert tcp.getsockname()[1] not in ports
    assert udp_ports_bound_by(2**22 + 1) == set()  # above pid_max: no such process


async def test_a_phone_never_takes_its_own_port_from_sipp(tmp_path: Path) -> None:
    """Waiting for SIPp's socket must not bind the phone's port: a bind probe holds the
    port for a moment, and a SIPp binding it then exits with errno 98 (seen once in a
    suite run with the 20 ms poll). Polling as fast as it can, a bind probe failed about
    one start in eight; every start must succeed."""
    with claim_sandbox_ports() as claim:
        # An instance is only needed for its ports: it is never launched.
        ports_of = Sandbox(name="pytest-phone-start", ports=claim.ports)
        for attempt in range(STARTS):
            phone = Phone(ports_of, 299, tmp_path / f"start-{attempt}")
            await phone.start(poll_interval=0)
            await phone.stop()
