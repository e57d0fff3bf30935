"""The ports of throwaway sandbox instances: every one from the session's claimed slot."""

from __future__ import annotations

from pathlib import Path

from fastagi_dev.sandbox.instance import PAGING_PHONES, SandboxPorts
from fastagi_dev.sandbox.ports import SPARE_TCP_PORTS, PortClaim, claim_sandbox_ports


def ephemeral_range() -> range:
    """The ports the kernel gives outgoing connections and bind(port 0)."""
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def udp_ports(ports: SandboxPorts) -> set[int]:
    phones = {ports.phone_port(ext) for ext in PAGING_PHONES}
    return phones | set(range(ports.rtp_start, ports.rtp_end + 1)) | {ports.sip}


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
        assert every[-1] < first + 400
        assert not set(every) & set(ephemeral_range())
        # No port serves two purposes (RTCP goes on the odd port after each RTP port,
        # within rtp_end: res_rtp_asterisk picks an even port below it).
        assert len(udp_ports(ports)) == len(PAGING_PHONES) + 200 + 1
        assert len(tcp_ports(claim)) == 1 + SPARE_TCP_PORTS


def test_claims_held_at_once_share_no_port() -> None:
    with claim_sandbox_ports() as one, claim_sandbox_ports() as other:
        assert not udp_ports(one.ports) & udp_ports(other.ports)
        assert not tcp_ports(one) & tcp_ports(other)
