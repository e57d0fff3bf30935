"""Just enough of Asterisk's configuration syntax (main/config.c) to read a FreePBX tree.

What we read: ``[section]`` headers (also ``[name](template)``), ``key = value`` and
``key => value`` lines, ``#include`` / ``#tryinclude`` directives, and comments: ``;`` to
the end of the line (``\\;`` is a literal semicolon) and ``;-- ... --;`` blocks. We never
rewrite anyone's lines; edits are whole marker blocks (``blocks.py``).

Text is decoded with ``surrogateescape`` so any byte survives a round trip unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENCODING = "utf-8"
ERRORS = "surrogateescape"

_SECTION = re.compile(r"^\s*\[([^\]]+)\]")
_INCLUDE = re.compile(r'^\s*#(?:try)?include\s+"?([^"\s]+)"?\s*$')
_ASSIGNMENT = re.compile(r"^\s*([^=\s]+)\s*=>?\s*(.*?)\s*$")


def decode(data: bytes) -> str:
    return data.decode(ENCODING, ERRORS)


def encode(text: str) -> bytes:
    return text.encode(ENCODING, ERRORS)


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    text: str  # without its comment and surrounding blanks


def code_lines(text: str) -> list[Line]:
    """Every line with comments removed, blank ones dropped. As main/config.c reads them:
    ``;`` starts a comment to the end of the line unless escaped (``\\;``); ``;--`` not
    followed by another ``-`` opens a block comment (they nest), ``--;`` closes one; so a
    ruler like ``;-------;`` is a line comment."""
    lines: list[Line] = []
    depth = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        out: list[str] = []
        index = 0
        while index < len(raw):
            char = raw[index]
            if char == "\\" and raw.startswith(";", index + 1):
                if depth == 0:
                    out.append(";")
                index += 2
                continue
            if char != ";":
                if depth == 0:
                    out.append(char)
                index += 1
                continue
            if raw.startswith(";--", index) and not raw.startswith(";---", index):
                depth += 1
                index += 3
                continue
            if depth > 0:
                if index >= 2 and raw[index - 2 : index] == "--":
                    depth -= 1
                index += 1
                continue
            break  # a line comment
        stripped = "".join(out).strip()
        if stripped:
            lines.append(Line(number, stripped))
    return lines


def includes(text: str) -> list[str]:
    """The file names of ``#include`` and ``#tryinclude`` lines, in order."""
    return [match.group(1) for line in code_lines(text) if (match := _INCLUDE.match(line.text))]


def sections(text: str) -> list[Line]:
    """``[name]`` headers: the name, and the line it is on."""
    return [
        Line(line.number, match.group(1).strip())
        for line in code_lines(text)
        if (match := _SECTION.match(line.text))
    ]


def section_values(text: str, section: str) -> dict[str, list[str]]:
    """Every ``key = value`` (and ``key => value``) of ``[section]``, values in order (a
    section may appear several times; Asterisk merges them)."""
    values: dict[str, list[str]] = {}
    current: str | None = None
    for line in code_lines(text):
        header = _SECTION.match(line.text)
        if header:
            current = header.group(1).strip()
            continue
        if current != section or line.text.startswith("#"):
            continue
        assignment = _ASSIGNMENT.match(line.text)
        if assignment:
            values.setdefault(assignment.group(1).lower(), []).append(assignment.group(2))
    return values


def global_assignments(text: str, name: str) -> list[int]:
    """Line numbers that assign ``name`` in a file of ``[globals]`` lines
    (globals_custom.conf is included inside FreePBX's ``[globals]``)."""
    found = []
    for line in code_lines(text):
        assignment = _ASSIGNMENT.match(line.text)
        if assignment and assignment.group(1) == name:
            found.append(line.number)
    return found


def context_includes(text: str, context: str) -> list[str]:
    """The contexts named by ``include => ...`` lines inside ``[context]``."""
    return [
        value.split(",")[0].strip() for value in section_values(text, context).get("include", [])
    ]
