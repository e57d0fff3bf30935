"""Our lines in files that are not ours: one block between two marker comments.

Theory of operation. ``install`` appends to (or updates in place) a block::

    ; BEGIN fastagi-panic [flags] -- written by `fastagi freepbx install`; ...
    <our lines>
    ; END fastagi-panic

and ``uninstall`` cuts it out again, leaving every other byte as it was. The flags on the
BEGIN line record what undoing needs and the file cannot tell by itself:

- ``created``: the file did not exist; once the block is gone and nothing else is left,
  the file is deleted.
- ``newline``: the file did not end with a newline, so one was added before the block;
  it is removed with the block.

A block that is broken (BEGIN without END, two BEGINs) is an error for a human: we never
guess which lines are ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = "fastagi-panic"
CREATED = "created"
NEWLINE = "newline"
_NOTE = "written by `fastagi freepbx install`; `fastagi freepbx uninstall` removes it"
_BEGIN = re.compile(rf"^; BEGIN {NAME}(?: \[([a-z,]*)\])?(?: .*)?$", re.M)
_END = re.compile(rf"^; END {NAME}$", re.M)


class BlockError(Exception):
    """The markers are not as ``install`` wrote them; the file needs a human."""


@dataclass(frozen=True)
class Block:
    start: int  # index of the BEGIN line's first character
    end: int  # index just past the END line (and its newline, when there is one)
    body: str  # the lines between the markers, each ending with a newline
    flags: frozenset[str]


def begin_line(flags: frozenset[str] = frozenset()) -> str:
    marker = f" [{','.join(sorted(flags))}]" if flags else ""
    return f"; BEGIN {NAME}{marker} -- {_NOTE}\n"


def end_line() -> str:
    return f"; END {NAME}\n"


def find(text: str, where: str) -> Block | None:
    """Our block in ``text`` (the file ``where``, for messages), or None."""
    begins = list(_BEGIN.finditer(text))
    ends = list(_END.finditer(text))
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0].start() < begins[0].end():
        raise BlockError(
            f"{where}: the `; BEGIN {NAME}` / `; END {NAME}` markers are broken "
            f"({len(begins)} BEGIN, {len(ends)} END); fix the file by hand"
        )
    begin, end = begins[0], ends[0]
    flags = frozenset(flag for flag in (begin.group(1) or "").split(",") if flag)
    unknown = flags - {CREATED, NEWLINE}
    if unknown:
        raise BlockError(f"{where}: unknown marker flags {sorted(unknown)}")
    end_index = end.end() + (1 if text[end.end() : end.end() + 1] == "\n" else 0)
    return Block(begin.start(), end_index, text[begin.end() + 1 : end.start()], flags)


def outside(text: str, where: str) -> str:
    """``text`` without our block: what belongs to somebody else."""
    block = find(text, where)
    return text if block is None else text[: block.start] + text[block.end :]


def put(text: str | None, body: str, where: str) -> str:
    """``text`` (None: the file does not exist) with our block holding ``body``: updated
    where it is, else appended."""
    if not body.endswith("\n"):
        body += "\n"
    if text is None:
        return begin_line(frozenset({CREATED})) + body + end_line()
    block = find(text, where)
    if block is not None:
        return text[: block.start] + begin_line(block.flags) + body + end_line() + text[block.end :]
    flags: frozenset[str] = frozenset()
    separator = ""
    if text and not text.endswith("\n"):
        flags = frozenset({NEWLINE})
        separator = "\n"
    return text + separator + begin_line(flags) + body + end_line()


def remove(text: str, where: str) -> str | None:
    """``text`` without our block, exactly as it was before ``put``; None when the file
    was ours alone (created by ``put``, nothing else written to it since)."""
    block = find(text, where)
    if block is None:
        return text
    before, after = text[: block.start], text[block.end :]
    if NEWLINE in block.flags and after == "" and before.endswith("\n"):
        # The newline put added; kept when somebody wrote more after the block since.
        before = before[:-1]
    rest = before + after
    if CREATED in block.flags and rest == "":
        return None
    return rest
