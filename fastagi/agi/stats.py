"""What the FastAGI server counts as it serves, read by the metrics when scraped
(fastagi/metrics): plain integers and a fixed-bucket histogram, no lock, no library, so
the hot path pays a clock read and a bisect per command and nothing else."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Seconds. Asterisk gives a reply 100 ms (AGI-NOTES), so the buckets are fine below it.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


@dataclass
class LatencyHistogram:
    """Observations counted per bucket: ``counts[i]`` holds those up to ``bounds[i]``
    (and above the bound before), the last slot those above every bound."""

    bounds: tuple[float, ...] = LATENCY_BOUNDS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations up to it), ``inf`` last: Prometheus's buckets."""
        running, found = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            found.append((bound, running))
        return found

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class AgiStats:
    # Connections whose environment arrived (a call the server then served), per route
    # as Asterisk named it ("panic", "probe", ... or an unknown one).
    sessions: dict[str, int] = field(default_factory=dict)
    refused: int = 0  # not admitted: not an allowed network, at the cap, shutting down
    evicted: int = 0  # admitted, then evicted at the cap before their environment came
    failed: int = 0  # admitted, but no valid environment in time
    # From Asterisk's last message (the environment or a reply) to the server's next
    # command: how long Asterisk, and the caller, waited on the server.
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def session_started(self, route: str) -> None:
        self.sessions[route] = self.sessions.get(route, 0) + 1
