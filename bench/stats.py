"""Medians, spreads and paired ratios over the benchmark's repetitions.

A figure is the median of the repetitions, with the lowest and highest value beside it:
with five repetitions on a shared machine, the full range is the honest spread (an
inter-quartile range of five numbers would hide the outliers it is meant to show).

A ratio is paired: repetition ``i`` of a candidate is divided by repetition ``i`` of the
baseline, which ran right before or after it, so a slow patch of the machine shows in
both and cancels; the ratios are then summarised like any other figure.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Spread", "paired_ratios", "percentile"]


@dataclass(frozen=True)
class Spread:
    """The median of some repetitions, and their lowest and highest values."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        """None when there are no values."""
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), len(values))

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside the whole range (every repetition on one side)."""
        return value < self.low or value > self.high

    def format(self, spec: str) -> str:
        """``median (low-high)``, each number formatted with ``spec`` (e.g. ``.2f``)."""
        if self.count == 1:
            return format(self.median, spec)
        return f"{self.median:{spec}} ({self.low:{spec}}-{self.high:{spec}})"


def paired_ratios(
    candidate: Sequence[float | None], baseline: Sequence[float | None]
) -> list[float]:
    """``candidate[i] / baseline[i]`` for every repetition where both were measured.

    A repetition is left out when either side is missing (the server failed that time)
    or the baseline is zero.
    """
    return [
        c / b
        for c, b in zip(candidate, baseline, strict=True)
        if c is not None and b is not None and b != 0
    ]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (0.95: the p95); 0.0 for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0
