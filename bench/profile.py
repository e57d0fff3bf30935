"""Read a py-spy collapsed-stack profile (``py-spy record --format raw``): where the
samples went, per function, inclusive (on the stack) and self (on top of it).

``python -m bench.profile PROFILE.txt [--top N] [--match fastagi/]``
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path


def tally(text: str) -> tuple[Counter[str], Counter[str], int]:
    """(inclusive, self, total samples) per frame ``function (file:line)`` without the
    line, so a function's lines count together."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_function(frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    return inclusive, own, total


def _function(frame: str) -> str:
    # "name (path/to/file.py:123)" -> "name (path/to/file.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def report(text: str, top: int, match: str) -> str:
    inclusive, own, total = tally(text)
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "inclusive %  self %  function"]
    for frame, count in inclusive.most_common():
        if match and match not in frame:
            continue
        lines.append(f"{100 * count / total:10.1f}  {100 * own[frame] / total:6.1f}  {frame}")
        if len(lines) >= top + 3:
            break
    lines += ["", "self %  function (any code)"]
    lines += [f"{100 * count / total:6.1f}  {frame}" for frame, count in own.most_common(top)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="", help="only functions whose frame has this")
    args = parser.parse_args(argv)
    print(report(Path(args.profile).read_text(), args.top, args.match))
    return 0


if __name__ == "__main__":
    sys.exit(main())
