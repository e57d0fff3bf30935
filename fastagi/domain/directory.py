"""Who is where: departments, their paging groups, and which extensions belong to them.

Pure: no I/O. The store builds a :class:`Directory` from the database
(``DirectoryStore.load_directory``); the call flows ask it for a caller's department.

Theory of operation: a department owns extensions through mappings, each written as

- an exact extension: ``101``;
- a range of extensions with as many digits each: ``100-149``;
- an Asterisk pattern: ``_1XX``, ``_1[2-4]X``, ``_9.``.

Extensions are digit strings of 1 to :data:`MAX_EXTENSION_LENGTH` digits. A pattern follows
Asterisk's rules for dialplan patterns (https://docs.asterisk.org/Configuration/Dialplan/
Pattern-Matching/): after the leading ``_``, ``X`` is any digit, ``Z`` 1-9, ``N`` 2-9,
``[15-7]`` one digit of a set, a digit itself, and a trailing ``.`` one or more further
digits or a trailing ``!`` zero or more. Letters may be lower case; ``-`` is ignored, as
Asterisk does (``_1-XX`` is ``_1XX``).

When several mappings match one extension, the most specific wins: an exact extension
beats any range, a smaller range beats a larger one, any range beats a pattern, and among
patterns the one that matches fewer extensions of the caller's length wins. Ties (two
ranges of one size, two patterns of one count) go to the lexically smaller text, so the
answer never depends on the order rows came out of the database.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

UNKNOWN_DEPARTMENT = "unknown department"
# How many extensions a directory lists one by one for its lookups (about 100 bytes each):
# mappings are listed narrowest first until this many; wider ones are checked one by one.
INDEXED_EXTENSIONS = 100_000
MAX_EXTENSION_LENGTH = 20
_DIGITS = frozenset("0123456789")
_CLASSES: Mapping[str, frozenset[str]] = {
    "X": _DIGITS,
    "Z": frozenset("123456789"),
    "N": frozenset("23456789"),
}


class PatternKind(enum.IntEnum):
    """The kinds of mapping, in order of specificity: the lower value wins."""

    EXACT = 0
    RANGE = 1
    PATTERN = 2


@dataclass(frozen=True)
class ExtensionPattern:
    """One parsed mapping text. Build it with :meth:`parse`."""

    text: str  # canonical: what the store saves and an administrator types to unmap
    kind: PatternKind
    # One set of allowed digits per position (exact and range: one digit each).
    positions: tuple[frozenset[str], ...]
    # '.' (one or more further digits), '!' (zero or more), or '' (nothing further).
    tail: str = ""
    first: int = 0  # a range's bounds; an exact extension's value twice
    last: int = 0

    def example(self) -> str:
        """An extension this mapping matches (the lowest), e.g. for the announcement an
        alarm of it would make: ``101`` for ``101``, ``100`` for ``100-149``, ``100`` for
        ``_1XX``, ``10`` for ``_1.``."""
        if self.kind is not PatternKind.PATTERN:
            return str(self.first).zfill(len(self.positions))
        digits = "".join(min(position) for position in self.positions)
        return digits + ("0" if self.tail == "." else "")

    @classmethod
    def parse(cls, text: str) -> ExtensionPattern:
        """Parse an exact extension, a range or an Asterisk pattern; ValueError says why."""
        stripped = text.strip()
        if not stripped:
            raise ValueError("malformed extension pattern '': it is empty")
        if stripped.startswith("_"):
            return cls._parse_pattern(stripped)
        if "-" in stripped:
            return cls._parse_range(stripped)
        if not stripped.isascii() or not stripped.isdigit():
            raise ValueError(
                f"malformed extension '{stripped}': expected digits (101), a range "
                "(100-149) or a pattern (_1XX)"
            )
        _check_extension(stripped, f"malformed extension '{stripped}'")
        value = int(stripped)
        return cls(
            text=stripped,
            kind=PatternKind.EXACT,
            positions=tuple(frozenset(digit) for digit in stripped),
            first=value,
            last=value,
        )

    @classmethod
    def _parse_range(cls, text: str) -> ExtensionPattern:
        where = f"malformed extension range '{text}'"
        first_text, _, last_text = text.partition("-")
        first_text, last_text = first_text.strip(), last_text.strip()
        _check_extension(first_text, where, "first")
        _check_extension(last_text, where, "last")
        if len(first_text) != len(last_text):
            raise ValueError(f"{where}: first and last must have the same number of digits")
        first, last = int(first_text), int(last_text)
        if first > last:
            raise ValueError(f"{where}: first is after last")
        if first == last:
            raise ValueError(f"{where}: first equals last; map the extension '{first_text}'")
        return cls(
            text=f"{first_text}-{last_text}",
            kind=PatternKind.RANGE,
            positions=tuple(_DIGITS for _ in first_text),
            first=first,
            last=last,
        )

    @classmethod
    def _parse_pattern(cls, text: str) -> ExtensionPattern:
        where = f"malformed extension pattern '{text}'"
        body = text[1:].upper()
        positions: list[frozenset[str]] = []
        canonical: list[str] = []
        tail = ""
        index = 0
        while index < len(body):
            char = body[index]
            if char == "-":  # Asterisk ignores it: _1-XX is _1XX
                index += 1
                continue
            if tail:
                raise ValueError(f"{where}: '{tail}' must come last")
            if char in _DIGITS:
                positions.append(frozenset(char))
                canonical.append(char)
            elif char in _CLASSES:
                positions.append(_CLASSES[char])
                canonical.append(char)
            elif char == "[":
                end = body.find("]", index)
                if end < 0:
                    raise ValueError(f"{where}: '[' is not closed by ']'")
                digits = _parse_set(body[index + 1 : end], where)
                positions.append(digits)
                canonical.append(_format_set(digits))
                index = end
            elif char in ".!":
                tail = char
            else:
                raise ValueError(
                    f"{where}: unexpected {char!r}; use digits, X, Z, N, [...], "
                    "and a final '.' or '!'"
                )
            index += 1
        if not positions and tail != ".":
            raise ValueError(f"{where}: it matches no digit; write at least one after '_'")
        if len(positions) > MAX_EXTENSION_LENGTH:
            raise ValueError(f"{where}: longer than {MAX_EXTENSION_LENGTH} digits")
        return cls(
            text="_" + "".join(canonical) + tail,
            kind=PatternKind.PATTERN,
            positions=tuple(positions),
            tail=tail,
        )

    def matches(self, extension: str) -> bool:
        """Whether this mapping covers ``extension`` (a string of digits; else never)."""
        if not is_extension(extension):
            return False
        if self.kind is PatternKind.RANGE:
            return len(extension) == len(self.positions) and (
                self.first <= int(extension) <= self.last
            )
        fixed = len(self.positions)
        if self.tail == "." and len(extension) <= fixed:
            return False
        if not self.tail and len(extension) != fixed:
            return False
        if len(extension) < fixed:
            return False
        return all(
            digit in allowed for digit, allowed in zip(extension, self.positions, strict=False)
        )

    def count(self, length: int) -> int:
        """How many extensions of ``length`` digits this mapping covers."""
        fixed = len(self.positions)
        if self.kind is PatternKind.RANGE:
            return self.last - self.first + 1 if length == fixed else 0
        if (
            length < fixed
            or (length == fixed and self.tail == ".")
            or (length > fixed and not self.tail)
        ):
            return 0
        combinations: int = math.prod(len(allowed) for allowed in self.positions)
        return combinations * int(10 ** (length - fixed))

    def extensions(self) -> Iterable[str]:
        """Every extension a mapping without an open end (``.``, ``!``) covers."""
        if self.tail:
            raise ValueError(f"{self.text} covers endless extensions")
        if self.kind is not PatternKind.PATTERN:
            width = len(self.positions)
            return (str(value).zfill(width) for value in range(self.first, self.last + 1))
        return ("".join(digits) for digits in itertools.product(*map(sorted, self.positions)))

    def specificity(self, length: int) -> tuple[int, int, str]:
        """Sort key among the mappings matching one extension of ``length``: lowest wins."""
        return (self.kind, self.count(length), self.text)

    def __str__(self) -> str:
        return self.text


def _check_extension(text: str, where: str, part: str = "") -> None:
    subject = f"{part} " if part else ""
    if not text:
        raise ValueError(f"{where}: {subject}is empty")
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"{where}: {subject}'{text}' is not made of digits")
    if len(text) > MAX_EXTENSION_LENGTH:
        raise ValueError(f"{where}: {subject}is longer than {MAX_EXTENSION_LENGTH} digits")


def _parse_set(inner: str, where: str) -> frozenset[str]:
    if not inner:
        raise ValueError(f"{where}: '[]' is empty")
    digits: set[str] = set()
    index = 0
    while index < len(inner):
        low = inner[index]
        if low not in _DIGITS:
            raise ValueError(f"{where}: {low!r} in [...] is not a digit")
        if index + 2 < len(inner) and inner[index + 1] == "-":
            high = inner[index + 2]
            if high not in _DIGITS:
                raise ValueError(f"{where}: {high!r} in [...] is not a digit")
            if low > high:
                raise ValueError(f"{where}: [{low}-{high}] runs backwards")
            digits.update(str(value) for value in range(int(low), int(high) + 1))
            index += 3
        else:
            digits.add(low)
            index += 1
    return frozenset(digits)


def _format_set(digits: frozenset[str]) -> str:
    if digits == _DIGITS:
        return "X"
    if len(digits) == 1:
        return next(iter(digits))
    ordered = sorted(digits)
    runs: list[str] = []
    start = previous = ordered[0]
    for digit in [*ordered[1:], ""]:
        if digit and int(digit) == int(previous) + 1:
            previous = digit
            continue
        runs.append(start if start == previous else f"{start}-{previous}")
        start = previous = digit
    return "[" + "".join(runs) + "]"


def is_extension(text: str) -> bool:
    """A string of 1 to MAX_EXTENSION_LENGTH ASCII digits."""
    return 0 < len(text) <= MAX_EXTENSION_LENGTH and text.isascii() and text.isdigit()


@dataclass(frozen=True)
class Department:
    id: int
    name: str
    paging_group_id: int | None
    interval_seconds: int | None  # None: the global default applies
    devices: tuple[str, ...] = ()  # the paging group's dial strings, e.g. ("PJSIP/201",)
    paging_group: str | None = None  # the paging group's name
    # None: the site's default (alarm_settings); fastagi/domain/language.py
    confirmation_mode: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class ExtensionMapping:
    department_id: int
    pattern: ExtensionPattern


@dataclass(frozen=True)
class DirectoryMatch:
    """The answer to a lookup, with the reason: the mapping that won."""

    department: Department
    pattern: ExtensionPattern


@dataclass(frozen=True)
class Directory:
    departments: tuple[Department, ...] = ()
    mappings: tuple[ExtensionMapping, ...] = ()
    default_interval_seconds: int = 60
    # Every device of every paging group: who an alarm from no department pages, unless
    # the settings name others.
    all_devices: tuple[str, ...] = ()
    # The site's language (alarm_settings.default_language): a department's own wins.
    default_language: str = "en"
    _by_id: Mapping[int, Department] = field(init=False, repr=False, compare=False)
    # The most specific mapping of each extension of the narrow mappings, and the wide ones
    # (open-ended patterns, and whatever did not fit in INDEXED_EXTENSIONS) to check one by
    # one: a lookup is a dict access and a few matches instead of a scan of every mapping
    # (7 ms at p99 with 3,500 mappings; bench/directory.py).
    _indexed: Mapping[str, ExtensionMapping] = field(init=False, repr=False, compare=False)
    _wide: tuple[ExtensionMapping, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {department.id: department for department in self.departments}
        missing = {m.department_id for m in self.mappings} - by_id.keys()
        if missing:
            raise ValueError(f"mappings name unknown department ids {sorted(missing)}")
        object.__setattr__(self, "_by_id", by_id)
        indexed: dict[str, ExtensionMapping] = {}
        wide: list[ExtensionMapping] = []
        finite = [m for m in self.mappings if m.pattern.tail == ""]
        # Narrowest first, in the order lookup() prefers them: the first mapping to list an
        # extension is its most specific among the listed ones.
        finite.sort(key=lambda m: m.pattern.specificity(len(m.pattern.positions)))
        budget = INDEXED_EXTENSIONS
        for mapping in finite:
            size = mapping.pattern.count(len(mapping.pattern.positions))
            if size > budget:
                wide.append(mapping)
                continue
            budget -= size
            for extension in mapping.pattern.extensions():
                indexed.setdefault(extension, mapping)
        wide += [m for m in self.mappings if m.pattern.tail != ""]
        object.__setattr__(self, "_indexed", indexed)
        object.__setattr__(self, "_wide", tuple(wide))

    @classmethod
    def build(
        cls,
        departments: Iterable[Department],
        mappings: Iterable[tuple[int, str]],
        default_interval_seconds: int = 60,
        all_devices: Iterable[str] = (),
        default_language: str = "en",
    ) -> Directory:
        """A directory from departments and ``(department_id, pattern_text)`` pairs."""
        return cls(
            departments=tuple(departments),
            mappings=tuple(
                ExtensionMapping(department_id, ExtensionPattern.parse(text))
                for department_id, text in mappings
            ),
            default_interval_seconds=default_interval_seconds,
            all_devices=tuple(all_devices),
            default_language=default_language,
        )

    def devices_for(self, department: Department | None) -> tuple[str, ...]:
        """Who an alarm of ``department`` pages; of no department: every paging group."""
        return self.all_devices if department is None else department.devices

    def lookup(self, extension: str) -> DirectoryMatch | None:
        """The department of ``extension`` and the mapping that decided it, or None."""
        extension = extension.strip()
        matching = [m for m in self._wide if m.pattern.matches(extension)]
        listed = self._indexed.get(extension)
        if listed is not None:
            matching.append(listed)
        if not matching:
            return None
        best = min(matching, key=lambda m: m.pattern.specificity(len(extension)))
        return DirectoryMatch(self._by_id[best.department_id], best.pattern)

    def department_for(self, extension: str) -> Department | None:
        match = self.lookup(extension)
        return match.department if match else None

    def department(self, department_id: int) -> Department | None:
        return self._by_id.get(department_id)

    def interval_for(self, department: Department | None) -> int:
        """The department's paging interval, else the global default."""
        if department is None or department.interval_seconds is None:
            return self.default_interval_seconds
        return department.interval_seconds


def department_name(department: Department | None) -> str:
    return UNKNOWN_DEPARTMENT if department is None else department.name


def alarm_key(department: Department | None, extension: str) -> str:
    """At most one alarm runs per key: per department, or per extension when unknown."""
    if department is None:
        return f"extension:{extension}"
    return f"department:{department.id}"
