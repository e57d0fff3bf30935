"""SIPp storms through the sandbox Asterisk: the scenario, the command, the counts.

One scenario per kind of call, written by :func:`scenario` from what the caller does:
dial, wait (the prompt plays: the server's GET DATA listens), type keys as SIP INFO 100 ms
apart, then wait for Asterisk's BYE, or hang up first. The callers are desk phones
100-199 in turn (an injection file), so the server sees a site's worth of extensions.

No keypad harness as in the tests (fastagi_dev/sandbox/keypad.py): at 300 calls a second
one AMI event per prompt would load Asterisk more than the calls. A key sent before the
server listens is lost, and the call then ends on the prompt's timeout: slower, still a
call that works, as it would for a person who typed too early.
"""

from __future__ import annotations

import csv
import io
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DESK_PHONES = range(100, 200)
KEY_GAP_MS = 100  # > Asterisk's 45 ms minimum between two keys (AST_MIN_DTMF_GAP)

_INVITE = """
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@[local_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=sendrecv
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
"""


def _in_dialog(method: str, cseq: str, branch: str, *, content: str = "") -> str:
    """A request of the caller's within the call: the ACK (``cseq`` "1"), or INFO and BYE
    (SIPp's counted ``[cseq]``, a branch of their own); ``content``: "type\n\nbody"."""
    content_type, _, body = content.partition("\n\n")
    headers = [
        f"{method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0",
        f"Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}",
        "From: <sip:[field0]@[local_ip]>;tag=[pid]SIPpTag00[call_number]",
        "To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]",
        "Call-ID: [call_id]",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:[field0]@[local_ip]:[local_port]>",
        "Max-Forwards: 70",
        *([f"Content-Type: {content_type}", "Content-Length: [len]"] if content else []),
        *([] if content else ["Content-Length: 0"]),
    ]
    return _message([*headers, "", *body.splitlines()])


def _message(lines: list[str]) -> str:
    """A SIP message's lines, as the scenario's CDATA holds them (SIPp drops the indent)."""
    return "\n".join(f"      {line}" if line else "" for line in lines) + "\n"


def _send(message: str, *, retrans: bool = False) -> str:
    opening = '<send retrans="500">' if retrans else "<send>"
    return f"  {opening}\n    <![CDATA[\n{message}    ]]>\n  </send>\n"


_ACK = _send(_in_dialog("ACK", "1", "[branch]"))
# The answer to Asterisk's BYE.
_OK = _send(
    _message(
        [
            "SIP/2.0 200 OK",
            "[last_Via:]",
            "[last_From:]",
            "[last_To:]",
            "[last_Call-ID:]",
            "[last_CSeq:]",
            "Content-Length: 0",
            "",
        ]
    )
)


def _key(pause_ms: int, key: str) -> str:
    """Type ``key`` as SIP INFO after ``pause_ms``; Asterisk may hang up instead."""
    info = _in_dialog(
        "INFO",
        "[cseq]",
        "[branch]-[cseq]",
        content=f"application/dtmf-relay\n\nSignal={key}\nDuration=160",
    )
    return (
        f'\n  <pause milliseconds="{pause_ms}"/>\n'
        + _send(info, retrans=True)
        + '  <recv request="BYE" optional="true" next="bye"/>\n'
        + '  <recv response="200"/>\n'
    )


_WAIT_BYE = '\n  <recv request="BYE"/>\n  <label id="bye"/>\n' + _OK


def _hang_up(pause_ms: int) -> str:
    """The caller hangs up; Asterisk's own BYE may cross it (the flow ended first)."""
    bye = _in_dialog("BYE", "[cseq]", "[branch]-[cseq]")
    return (
        f'\n  <pause milliseconds="{pause_ms}"/>\n'
        + _send(bye, retrans=True)
        + '  <recv request="BYE" optional="true" next="bye"/>\n'
        + '  <recv response="200" next="end"/>\n'
        + '  <label id="bye"/>\n'
        + _OK
        + '  <label id="end"/>\n'
    )


@dataclass(frozen=True)
class CallKind:
    """What one caller does: dial ``service``, wait ``first_key_ms``, type ``keys``;
    then wait for Asterisk to hang up, or hang up ``hang_up_ms`` after the last key."""

    name: str
    route: str  # the FastAGI route the dialplan hands the call to
    service: str
    keys: tuple[str, ...]
    first_key_ms: int
    hang_up_ms: int | None = None


def scenario(kind: CallKind) -> str:
    """The SIPp XML scenario of ``kind``."""
    body = [_INVITE, _ACK]
    for index, key in enumerate(kind.keys):
        body.append(_key(kind.first_key_ms if index == 0 else KEY_GAP_MS, key))
    body.append(_WAIT_BYE if kind.hang_up_ms is None else _hang_up(kind.hang_up_ms))
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        '<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        f'<scenario name="{kind.name}">\n' + "".join(body) + "</scenario>\n"
    )


def injection_file(phones: Sequence[int] = DESK_PHONES) -> str:
    """SIPp's -inf: one desk phone per call, in turn."""
    out = io.StringIO()
    out.write("SEQUENTIAL\n")
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    for phone in phones:
        writer.writerow([phone, ""])
    return out.getvalue()


@dataclass(frozen=True)
class StormResult:
    calls: int
    successful: int
    failed: int
    elapsed: float  # seconds from SIPp's start to its exit
    returncode: int
    screen_tail: str


def _stat_counts(stat_file: Path) -> tuple[int, int]:
    """(successful, failed) calls from SIPp's last -trace_stat line."""
    rows = list(csv.reader(stat_file.read_text().splitlines(), delimiter=";"))
    if len(rows) < 2:
        return 0, 0
    header, last = rows[0], rows[-1]
    figures = dict(zip(header, last, strict=False))
    return int(figures["SuccessfulCall(C)"]), int(figures["FailedCall(C)"])


def run_storm(
    kind: CallKind,
    *,
    sip_port: int,
    local_port: int,
    rate: float,
    calls: int,
    workdir: Path,
    call_timeout_s: float = 30.0,
) -> StormResult:
    """``calls`` calls of ``kind`` at ``rate`` per second against 127.0.0.1:``sip_port``.

    Blocking (SIPp is a child process): run it in a thread from asyncio code.
    """
    import time

    workdir.mkdir(parents=True, exist_ok=True)
    scenario_path = workdir / f"{kind.name}.xml"
    scenario_path.write_text(scenario(kind))
    phones = workdir / "phones.csv"
    phones.write_text(injection_file())
    stat_file = workdir / f"{kind.name}.stat.csv"
    stat_file.unlink(missing_ok=True)
    command = [
        "sipp",
        f"127.0.0.1:{sip_port}",
        "-sf",
        str(scenario_path),
        "-inf",
        str(phones),
        "-s",
        kind.service,
        "-i",
        "127.0.0.1",
        "-p",
        str(local_port),
        "-r",
        f"{rate:g}",
        "-m",
        str(calls),
        # Enough room for every call of a slow step at once.
        "-l",
        str(max(calls, 1)),
        "-recv_timeout",
        str(int(call_timeout_s * 1000)),
        "-timeout",
        str(int(calls / rate + call_timeout_s + 10)),
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stat_file),
        "-fd",
        "1",
        "-trace_err",
        "-error_file",
        str(workdir / f"{kind.name}.errors"),
    ]
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, errors="replace", check=False
    )
    elapsed = time.monotonic() - started
    successful, failed = _stat_counts(stat_file) if stat_file.exists() else (0, calls)
    return StormResult(
        calls=calls,
        successful=successful,
        failed=max(failed, calls - successful),
        elapsed=elapsed,
        returncode=done.returncode,
        screen_tail=(done.stdout + done.stderr)[-2000:],
    )
