"""``fastagi serve``: the production server (fastagi/app.py wires it)."""

from __future__ import annotations

import argparse

from fastagi.app import Interface, raise_open_files_limit, run, serve
from fastagi.cli.common import SubParsers, load_settings_or_fail
from fastagi.logs import configure_logging


def register(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser("serve", help="run the FastAGI server (production)")
    parser.set_defaults(handler=_serve_command)


def _serve_command(args: argparse.Namespace) -> int:
    settings = load_settings_or_fail()
    configure_logging(settings.log_level)
    raise_open_files_limit(settings)
    interfaces: list[Interface] = []
    if settings.web.enabled:
        from fastagi.web import running_console

        interfaces.append(running_console)  # with /healthz and /metrics
    elif settings.metrics.enabled:
        from fastagi.metrics import running_metrics

        interfaces.append(running_metrics)
    run(serve(settings, interfaces))
    return 0
