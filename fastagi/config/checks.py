"""The value checks several settings sections share; each raises ValueError with the
message pydantic shows for the field."""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Iterable
from pathlib import Path

# What would end an AMI or SIP header, or an AGI command, early.
LINE_BREAKS = "\r\n\0"
# What would split Page()'s device list (the rule of paging_group_devices.device,
# sql/002_alarms.sql).
_DEVICE_FORBIDDEN = "&,|() \t"


def one_line(value: str, what: str = "") -> str:
    if any(char in value for char in LINE_BREAKS):
        raise ValueError(f"{what} must be one line (no CR, LF or NUL)".lstrip())
    return value


def ip_networks(networks: list[str]) -> list[str]:
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise ValueError(f"not an IP network: {network!r} ({exc})") from None
    return networks


def asterisk_devices(devices: Iterable[str]) -> None:
    for device in devices:
        tech, _, resource = device.partition("/")
        if not (tech and resource) or any(char in device for char in _DEVICE_FORBIDDEN):
            raise ValueError(f"not an Asterisk device like PJSIP/201: {device!r}")


def absolute_directory(value: Path) -> Path:
    """A directory this server writes to: relative to the server's working directory it
    would depend on how the server was started."""
    if not value.is_absolute():
        raise ValueError(f"directory must be absolute: {value}")
    return value


def asterisk_directory(value: str | None) -> str | None:
    """The same directory as Asterisk sees it (None: the same path). Asterisk resolves a
    relative name against its own sounds directory, which would silently point somewhere
    else; so the absolute form, without a trailing slash."""
    if value is None:
        return None
    if not posixpath.isabs(value):
        raise ValueError(f"asterisk_directory must be absolute: {value!r}")
    return value.rstrip("/") or "/"
