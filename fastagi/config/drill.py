"""Settings of drills (``[drill]``): what a drill says and pages, the phone's drill PIN,
and the schedule ``fastagi serve`` runs drills by (fastagi/domain/drill.py)."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from fastagi.config.checks import asterisk_devices, one_line
from fastagi.domain.drill import MAX_CYCLES, MIN_CYCLES, Frequency, Schedule, parse_time

_LOCALTIME = Path("/etc/localtime")


class DrillSettings(BaseModel):
    """``[drill]``. A drill pages the real chain with this announcement; it stops by
    itself after ``cycles`` pages. ``fastagi drill`` overrides cycles, devices and the
    emergency call per drill; a drill from a phone (*558) or the schedule uses these."""

    model_config = ConfigDict(extra="forbid")

    # What a drill pages; {department} is filled in.
    announcement: str = "This is a test of the panic alarm for {department}. No action is needed."
    # What the paged phones (and the emergency call's destination) show.
    caller_name: str = "TEST {department}"
    # Page cycles before a drill stops by itself.
    cycles: int = Field(default=1, ge=MIN_CYCLES, le=MAX_CYCLES)
    # Test devices a drill pages instead of the department's paging group (e.g.
    # ["PJSIP/290"]); empty: the paging group, as a real alarm would.
    devices: list[str] = Field(default_factory=list)
    # Call the [emergency] destinations too (a drill from a phone or the schedule).
    emergency: bool = False
    # What the emergency call's destination hears in a drill; {department}, {extension}
    # and {time} are filled in.
    emergency_announcement: str = (
        "This is a test of the panic alarm's emergency call, for {department}."
        " No action is needed. Press 1 to acknowledge the test."
    )
    # Send the e-mails and SMS of a drill, each marked [TEST]; off: a drill tells nobody.
    notify: bool = False
    # After its last page, how long a drill with an emergency call waits for that call to
    # be acknowledged (or every destination tried) before it ends.
    settle_timeout: float = Field(default=120.0, ge=0.0, le=3600.0)
    # The PIN of a drill from a phone (*558, then this PIN and #). Unset: *558 starts
    # nothing.
    pin: SecretStr | None = None
    # Wrong PINs one *558 call may enter before it ends.
    pin_attempts: int = Field(default=3, ge=1, le=10)
    # The schedule `fastagi serve` runs drills by: "off", "daily", "weekly" (day 1 =
    # Monday .. 7) or "monthly" (day 1 .. 28), at `time` (HH:MM or HH:MM:SS) in
    # `timezone` (an IANA name; empty: the server's /etc/localtime). Pick a quiet hour.
    # Only one server of a site runs each scheduled drill.
    schedule: Literal["off", "daily", "weekly", "monthly"] = "off"
    day: int = Field(default=1, ge=1, le=28)
    time: str = "03:00"
    timezone: str = ""
    # The departments the schedule drills; empty: every department.
    departments: list[str] = Field(default_factory=list)

    @field_validator("announcement", "caller_name", "emergency_announcement")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # These travel in AMI and SIP headers: a line break would end the header.
        return one_line(value)

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: list[str]) -> list[str]:
        asterisk_devices(value)
        return value

    @field_validator("pin")
    @classmethod
    def _pin(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            pin = value.get_secret_value()
            if not (4 <= len(pin) <= 12 and pin.isascii() and pin.isdigit()):
                raise ValueError("the drill PIN is 4 to 12 digits")
        return value

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_time(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if value:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DrillSettings:
        for name, sample in (
            ("announcement", {"department": "x"}),
            ("caller_name", {"department": "x"}),
            ("emergency_announcement", {"department": "x", "extension": "1", "time": "03:00"}),
        ):
            try:
                getattr(self, name).format(**sample)
            except (KeyError, IndexError, ValueError) as exc:
                allowed = ", ".join(f"{{{key}}}" for key in sample)
                raise ValueError(f"{name} may use only {allowed}: {exc!r}") from None
        if self.schedule == "weekly" and self.day > 7:
            raise ValueError("a weekly drill's day is 1 (Monday) to 7 (Sunday)")
        return self

    def schedule_rule(self) -> Schedule:
        """The schedule as the domain computes it (zone read now)."""
        return Schedule(Frequency(self.schedule), parse_time(self.time), self.day, self.zone())

    def zone(self) -> tzinfo:
        if self.timezone:
            return zoneinfo.ZoneInfo(self.timezone)
        try:
            with _LOCALTIME.open("rb") as file:
                return zoneinfo.ZoneInfo.from_file(file, key="localtime")
        except (OSError, ValueError):
            return UTC
