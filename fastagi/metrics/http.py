"""``/healthz`` and ``/metrics`` over HTTP: on the web console's listener when it runs
(:func:`routes`, registered by fastagi/web/server.py), else on a listener of their own
(:func:`running_metrics`, ``[metrics] host:port``).

``/healthz`` needs no login: each scheduled check's last result and its age, 200 while
none is a FAIL, 503 while one is. ``/metrics`` needs no login either, so it answers only
clients in ``[metrics] allowed_networks`` (loopback by default). A request that came
through a reverse proxy (it carries ``X-Forwarded-For`` or ``Forwarded``) is judged by the
client the proxy names when ``[web] trust_proxy_headers`` is set, and refused when not:
behind a proxy every request comes from loopback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from fastagi.app import Services
from fastagi.assurance.result import Status
from fastagi.config import Settings
from fastagi.metrics.collector import server_registry

logger = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 2.0


class Endpoints:
    """The two handlers, over one server's services and metrics registry."""

    def __init__(self, services: Services, settings: Settings) -> None:
        self._services = services
        self._settings = settings
        self._registry, self._collector = server_registry(services)
        self._networks = [
            ipaddress.ip_network(network, strict=False)
            for network in settings.metrics.allowed_networks
        ]

    async def healthz(self, _request: web.Request) -> web.Response:
        health = self._services.health
        if health is None:
            return web.json_response({"status": "OK", "health": "disabled", "checks": []})
        now = time.monotonic()
        failing = [o.result.name for o in health.results.values() if o.result.status is Status.FAIL]
        body = {
            "status": "FAIL" if failing else "OK",
            "health": health.state.value,
            "site_degraded": health.site_degraded,
            "failing": failing,
            "runs": health.runs,
            "checks": [observed.to_dict(now) for observed in health.results.values()],
        }
        return web.json_response(body, status=503 if failing else 200)

    async def metrics(self, request: web.Request) -> web.Response:
        if not self._may_read(request):
            raise web.HTTPForbidden(text="/metrics: not from an allowed network\n")
        await self._collector.refresh()
        # The text format (0.0.4) unless the scraper asks for OpenMetrics.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encode(self._registry))
        response.headers["Content-Type"] = content_type
        return response

    def _may_read(self, request: web.Request) -> bool:
        address = request.remote or ""
        proxied = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
        if proxied:
            if not self._settings.web.trust_proxy_headers:
                return False
            forwarded = request.headers.get("X-Forwarded-For", "")
            address = forwarded.rsplit(",", 1)[-1].strip()
        try:
            client = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(client in network for network in self._networks)


def routes(services: Services, settings: Settings) -> list[web.RouteDef]:
    """``/healthz``, and ``/metrics`` unless ``[metrics] enabled`` is false."""
    endpoints = Endpoints(services, settings)
    found = [web.get("/healthz", endpoints.healthz)]
    if settings.metrics.enabled:
        found.append(web.get("/metrics", endpoints.metrics))
    return found


@dataclass(frozen=True)
class MetricsListener:
    url: str
    port: int


@contextlib.asynccontextmanager
async def running_metrics(
    services: Services, settings: Settings
) -> AsyncIterator[MetricsListener | None]:
    """``/healthz`` and ``/metrics`` on ``[metrics] host:port`` (an ``Interface`` of
    fastagi/app.py, for a server without the web console); None when the port is taken."""
    app = web.Application()
    app.router.add_routes(routes(services, settings))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    try:
        host = settings.metrics.host
        site = web.TCPSite(runner, host, settings.metrics.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            # Never the reason the alarm server does not run (a second server on this
            # host, say): it serves calls without its metrics.
            logger.error(
                "no /metrics and /healthz: cannot listen on %s:%d (%s); set [metrics] port",
                host,
                settings.metrics.port,
                exc,
            )
            yield None
            return
        port = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        listener = MetricsListener(f"http://{shown}:{port}", port)
        logger.info("metrics listening", extra={"url": listener.url})
        yield listener
    finally:
        await runner.cleanup()
