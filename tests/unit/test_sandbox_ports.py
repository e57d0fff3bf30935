"""The ports of throwaway sandbox instances: every one from the session's claimed slot."""

from __future__ import annotations

import socket
from pathlib import Path

from fastagi_dev.sandbox.instance import PAGING_PHONES, Sandbox, SandboxPorts
from fastagi_dev.sandbox.ports import (
    RTP_PORTS_PER_INSTANCE,
    SLOT_SIZE,
    SPARE_TCP_PORTS,
    PortClaim,
    claim_sandbox_ports,
)


def ephemeral_range() -> range:
    """The ports the kernel gives outgoing connections and bind(port 0)."""
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def caller_ports(ports: SandboxPorts) -> set[int]:
    return set(range(ports.caller_start, ports.caller_start + ports.caller_count))


def udp_ports(ports: SandboxPorts) -> set[int]:
    phones = {ports.phone_port(ext) for ext in PAGING_PHONES}
    rtp = set(range(ports.rtp_start, ports.rtp_end + 1))
    return phones | rtp | {ports.sip} | caller_ports(ports)


def tcp_ports(claim: PortClaim) -> set[int]:
    return {claim.ports.ami} | {claim.tcp_port(index) for index in range(SPARE_TCP_PORTS)}


def test_every_port_of_an_instance_lies_in_its_slot_below_the_ephemeral_range() -> None:
    """SIP and AMI too: a port the kernel hands out as free (port 0) lies in the ephemeral
    range, where any connect() on the machine may take it before Asterisk binds it."""
    with claim_sandbox_ports() as claim:
        ports = claim.ports
        every = sorted(udp_ports(ports) | tcp_ports(claim))
        first = ports.phone_port(PAGING_PHONES.start)
        assert every[0] == first
        assert every[-1] < first + SLOT_SIZE
        assert not set(every) & set(ephemeral_range())
        # No port serves two purposes (RTCP goes on the odd port after each RTP port,
        # within rtp_end: res_rtp_asterisk picks an even port below it).
        assert len(udp_ports(ports)) == (
            len(PAGING_PHONES) + RTP_PORTS_PER_INSTANCE + 1 + SPARE_TCP_PORTS
        )
        # Room for the RTP sessions of 200 alarms' pages dialled at once, two phones each.
        assert RTP_PORTS_PER_INSTANCE // 2 >= 400
        assert len(tcp_ports(claim)) == 1 + SPARE_TCP_PORTS


def test_claims_held_at_once_share_no_port() -> None:
    with claim_sandbox_ports() as one, claim_sandbox_ports() as other:
        assert not udp_ports(one.ports) & udp_ports(other.ports)
        assert not tcp_ports(one) & tcp_ports(other)


def test_phones_that_call_get_ports_of_the_slot_each_its_own() -> None:
    """A SIPp phone that calls binds a port of the slot: a port the kernel handed out as
    free was once taken before SIPp bound it ("Unable to bind main socket")."""
    with claim_sandbox_ports() as claim:
        sandbox = Sandbox(Path("/nonexistent"), "ports-test", claim.ports)
        handed_out = [sandbox.caller_port() for _ in range(3)]
        assert len(set(handed_out)) == 3
        assert set(handed_out) <= caller_ports(claim.ports)
        # A phone still holding the next port in turn keeps it: the one after is handed out.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind(("127.0.0.1", handed_out[-1] + 1))
            assert sandbox.caller_port() == handed_out[-1] + 2
