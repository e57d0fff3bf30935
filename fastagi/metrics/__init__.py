"""How the server is doing, for machines: ``/metrics`` (Prometheus text format, read from
the services' own counters at scrape time) and ``/healthz`` (the scheduled checks' last
results). Served on the web console's listener, or on their own (``[metrics]``)."""

from fastagi.metrics.http import MetricsListener, routes, running_metrics

__all__ = ["MetricsListener", "routes", "running_metrics"]
