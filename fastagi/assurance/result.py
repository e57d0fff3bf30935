"""What a check finds, and what a run of checks adds up to."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Status(enum.Enum):
    """OK: proven to work now. WARN: works, but something is off or could not be
    known. FAIL: an alarm would not get through (or not all of it). SKIP: not checked,
    because a check it stands on failed; that line says what to fix."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Finding:
    """What one check found: a status, one line on what is wrong (or what was proven),
    and what to do about it."""

    status: Status
    message: str
    remedy: str = ""

    @classmethod
    def ok(cls, message: str) -> Finding:
        return cls(Status.OK, message)

    @classmethod
    def warn(cls, message: str, remedy: str = "") -> Finding:
        return cls(Status.WARN, message, remedy)

    @classmethod
    def fail(cls, message: str, remedy: str = "") -> Finding:
        return cls(Status.FAIL, message, remedy)

    @classmethod
    def skip(cls, message: str) -> Finding:
        return cls(Status.SKIP, message)


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    message: str
    remedy: str
    duration: float  # seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "message": self.message,
            "remedy": self.remedy,
            "duration": round(self.duration, 3),
        }


@dataclass(frozen=True)
class Report:
    results: tuple[CheckResult, ...]

    def count(self, status: Status) -> int:
        return sum(1 for result in self.results if result.status is status)

    @property
    def status(self) -> Status:
        """FAIL when a line failed; WARN when one warned or was not checked (a SKIP comes
        with the FAIL it stands on, but alone it would still not pass: nothing unknown
        does); else OK."""
        if self.count(Status.FAIL):
            return Status.FAIL
        if self.count(Status.WARN) or self.count(Status.SKIP):
            return Status.WARN
        return Status.OK

    @property
    def exit_code(self) -> int:
        """0 when every line is OK, 1 with a WARN, 2 with a FAIL."""
        return {Status.OK: 0, Status.WARN: 1, Status.FAIL: 2}[self.status]

    def result(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "exit_code": self.exit_code,
            "checks": [result.to_dict() for result in self.results],
        }
