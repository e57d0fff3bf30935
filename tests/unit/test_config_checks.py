"""Each settings section refuses through the shared checks of fastagi/config/checks.py:
a line break in a value that travels in an AMI or SIP header, a malformed network, a
device that would split Page()'s list."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from fastagi.config import AgiSettings, AlarmSettings, EmergencySettings
from fastagi.config.drill import DrillSettings
from fastagi.config.health import MetricsSettings


@pytest.mark.parametrize(
    ("section", "field"),
    [
        (AlarmSettings, "caller_name"),
        (AlarmSettings, "announcement"),
        (EmergencySettings, "caller_id_name"),
        (EmergencySettings, "context"),
        (DrillSettings, "announcement"),
    ],
)
@pytest.mark.parametrize("line_break", ["\r", "\n", "\0"])
def test_a_line_break_is_refused(section: type[BaseModel], field: str, line_break: str) -> None:
    with pytest.raises(ValidationError, match="must be one line"):
        section(**{field: f"PANIC{line_break}X-Injected: yes"})


@pytest.mark.parametrize("section", [AgiSettings, MetricsSettings])
def test_a_malformed_network_is_refused_by_name(section: type[BaseModel]) -> None:
    with pytest.raises(ValidationError, match=re.escape("not an IP network: '10.0.0.0/33'")):
        section(allowed_networks=["127.0.0.0/8", "10.0.0.0/33"])


@pytest.mark.parametrize(
    ("section", "changes"),
    [
        (AlarmSettings, {"unknown_department_devices": ["PJSIP/201&PJSIP/202"]}),
        (DrillSettings, {"devices": ["PJSIP/201,PJSIP/202"]}),
        (DrillSettings, {"devices": ["201"]}),
    ],
)
def test_a_device_that_would_split_the_page_is_refused(
    section: type[BaseModel], changes: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError, match="not an Asterisk device like PJSIP/201"):
        section(**changes)


def test_the_values_that_pass_are_kept() -> None:
    assert AlarmSettings(caller_name="PANIC ER").caller_name == "PANIC ER"
    assert AgiSettings(allowed_networks=["10.0.0.0/8"]).allowed_networks == ["10.0.0.0/8"]
    assert AlarmSettings(unknown_department_devices=["PJSIP/201"]).unknown_department_devices == [
        "PJSIP/201"
    ]
