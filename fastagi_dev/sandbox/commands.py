"""``python -m fastagi_dev sandbox ACTION``: the sandbox Asterisk from the command line.

    image [--force]     build the image if it is missing (idempotent)
    up [--detach]       start an instance (default name "dev": SIP 5060, AMI 5038,
                        AGI agi://127.0.0.1:4573, paging phones at 5000 + extension);
                        in the foreground until Ctrl-C, or in the background with --detach
    down                stop it
    status              pid, ports, AMI login and uptime
    cli <command...>    run an Asterisk CLI command, e.g.
                        `python -m fastagi_dev sandbox cli pjsip show endpoints`
    call <number> [keys...]
                        a SIPp desk phone (--ext, default 101) calls <number>; the
                        person at it types each of [keys...] when a prompt plays, e.g.
                        `python -m fastagi_dev sandbox call '*599' 42`

Every action takes ``--name`` (default ``dev``) and ``--rootfs`` (default
``$FASTAGI_SANDBOX_ROOTFS`` or ``<repo>/.cache/sandbox/rootfs``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
from pathlib import Path
from typing import Any

from fastagi.cli.common import CliError
from fastagi_dev.sandbox.image import ImageError, build_image, default_rootfs
from fastagi_dev.sandbox.instance import DEFAULT_AGI_URL, Sandbox, SandboxError, SandboxPorts
from fastagi_dev.sandbox.sipp import call_dtmf


def register(subparsers: Any) -> None:
    """Add the ``sandbox`` command to the ``python -m fastagi_dev`` parser."""
    parser = subparsers.add_parser(
        "sandbox", help="the sandbox Asterisk (chroot) for development and tests"
    )
    actions = parser.add_subparsers(dest="sandbox_action", metavar="ACTION", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        action: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        action.add_argument("--rootfs", type=Path, default=None, help="the image directory")
        return action

    image = add("image", "build the sandbox image if it is missing")
    image.add_argument("--force", action="store_true", help="rebuild even when complete")
    image.set_defaults(handler=_image)

    defaults = SandboxPorts()
    up = add("up", "start an instance")
    up.add_argument("--name", default="dev")
    up.add_argument("--sip-port", type=int, default=defaults.sip)
    up.add_argument("--ami-port", type=int, default=defaults.ami)
    up.add_argument("--rtp-start", type=int, default=defaults.rtp_start)
    up.add_argument("--rtp-end", type=int, default=defaults.rtp_end)
    up.add_argument("--phone-base", type=int, default=defaults.phone_base)
    up.add_argument("--agi-url", default=DEFAULT_AGI_URL)
    up.add_argument(
        "--detach", action="store_true", help="leave it running; stop with `sandbox down`"
    )
    up.set_defaults(handler=_up)

    down = add("down", "stop an instance")
    down.add_argument("--name", default="dev")
    down.set_defaults(handler=_down)

    status = add("status", "show whether an instance runs")
    status.add_argument("--name", default="dev")
    status.set_defaults(handler=_status)

    cli = add("cli", "run an Asterisk CLI command in an instance")
    cli.add_argument("--name", default="dev")
    cli.add_argument("words", nargs="+", metavar="COMMAND")
    cli.set_defaults(handler=_cli)

    call = add("call", "call from a SIPp desk phone, typing keys when prompts play")
    call.add_argument("--name", default="dev")
    call.add_argument("--ext", default="101", help="the calling desk phone (default 101)")
    call.add_argument("number", help="what to dial, e.g. '*599'")
    call.add_argument(
        "answers", nargs="*", metavar="KEYS", help="the keys typed at each prompt, in order"
    )
    call.set_defaults(handler=_call)


def _image(args: argparse.Namespace) -> int:
    rootfs = args.rootfs or default_rootfs()
    if not args.force:
        print(f"sandbox image: checking {rootfs}", flush=True)
    else:
        print(f"sandbox image: rebuilding {rootfs}", flush=True)
    try:
        result = build_image(rootfs, force=args.force)
    except ImageError as exc:
        raise CliError(str(exc)) from None
    did = "built" if result.built else "already complete, verified"
    print(f"sandbox image: {did} in {result.seconds:.1f} s: {result.asterisk_version}")
    return 0


def _up(args: argparse.Namespace) -> int:
    ports = SandboxPorts(
        sip=args.sip_port,
        ami=args.ami_port,
        rtp_start=args.rtp_start,
        rtp_end=args.rtp_end,
        phone_base=args.phone_base,
    )
    sandbox = Sandbox(args.rootfs, args.name, ports, args.agi_url, die_with_parent=not args.detach)
    try:
        if args.detach:
            asyncio.run(sandbox.start())
            _print_status(sandbox)
            return 0
        asyncio.run(_up_foreground(sandbox))
    except (SandboxError, ImageError) as exc:
        raise CliError(str(exc)) from None
    return 0


async def _up_foreground(sandbox: Sandbox) -> None:
    await sandbox.start()
    try:
        _print_status(sandbox)
        print("Ctrl-C stops it.", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        exited = asyncio.create_task(asyncio.to_thread(sandbox.wait_exit, None))
        stopped = asyncio.create_task(stop.wait())
        done, pending = await asyncio.wait({exited, stopped}, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()
        if exited in done:
            print(f"Asterisk exited; console log {sandbox.log_path}:\n{sandbox.log_tail(20)}")
    finally:
        await sandbox.stop()


def _down(args: argparse.Namespace) -> int:
    try:
        sandbox = Sandbox.attach(args.rootfs, args.name)
    except SandboxError as exc:
        print(str(exc))
        return 0
    pid = sandbox.pid
    sandbox.stop_sync()
    print(f"sandbox {args.name}: stopped (pid {pid})")
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        sandbox = Sandbox.attach(args.rootfs, args.name)
    except SandboxError as exc:
        print(str(exc))
        return 1
    _print_status(sandbox)
    return 0


def _print_status(sandbox: Sandbox) -> None:
    try:
        uptime = sandbox.cli("core show uptime").strip()
    except SandboxError as exc:
        uptime = f"(no answer: {exc})"
    ports = sandbox.ports
    print(
        f"sandbox {sandbox.name}: running, pid {sandbox.pid}\n"
        f"  SIP        udp 127.0.0.1:{ports.sip} (desk phones 100-199 register or call)\n"
        f"  paging     phone 2NN at udp 127.0.0.1:{ports.phone_base}+2NN\n"
        f"  AMI        127.0.0.1:{ports.ami} user {sandbox.ami_username} "
        f"secret {sandbox.ami_secret}\n"
        f"  RTP        {ports.rtp_start}-{ports.rtp_end}\n"
        f"  FastAGI    {sandbox.agi_url}\n"
        f"  console    {sandbox.log_path}\n"
        f"  uptime     {' / '.join(uptime.splitlines()) or '?'}",
        flush=True,
    )


def _call(args: argparse.Namespace) -> int:
    try:
        sandbox = Sandbox.attach(args.rootfs, args.name)
        workdir = Path(tempfile.mkdtemp(prefix="fastagi-call-"))
        result = asyncio.run(
            call_dtmf(sandbox, workdir, service=args.number, ext=args.ext, answers=args.answers)
        )
    except (SandboxError, ValueError) as exc:
        raise CliError(str(exc)) from None
    sent = [m.first_line for m in result.messages if not m.received]
    print("\n".join(sent))
    print(f"SIPp logs: {workdir}")
    try:
        result.check()
    except AssertionError as exc:
        raise CliError(str(exc)) from None
    return 0


def _cli(args: argparse.Namespace) -> int:
    try:
        sandbox = Sandbox.attach(args.rootfs, args.name)
        output = sandbox.cli(" ".join(args.words), timeout=30.0)
    except SandboxError as exc:
        raise CliError(str(exc)) from None
    print(output, end="" if output.endswith("\n") else "\n")
    return 0
