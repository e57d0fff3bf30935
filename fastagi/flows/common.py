"""What the call flows share: their settings, the caller's identity and language, and
the status they leave for the dialplan.

Both flows trust nothing that came from the phone. A caller id is data: it may be
``"anonymous"``, a SIP user name, or text with quotes, backslashes and newlines in it.
It reaches the database only as a query parameter, the caller's ears only through the
text-to-speech engine (which speaks it literally) or spelled with built-in sounds (which
skip what they cannot say), and Asterisk only as one AGI word, never spliced into a
command or dialplan expression.
"""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastagi.agi.errors import AgiError
from fastagi.agi.session import AgiSession
from fastagi.config import FlowSettings
from fastagi.domain.directory import Department, is_extension
from fastagi.domain.events import HistoryEvent
from fastagi.domain.language import Catalogue, Languages

# Writes a history event and never raises (fastagi.alarms.recorder.HistoryRecorder.record).
Recorder = Callable[[HistoryEvent], Awaitable[object]]

__all__ = [
    "STATUS_VARIABLE",
    "CallLanguage",
    "Caller",
    "FlowSettings",
    "call_details",
    "call_language",
    "caller_identity",
    "display_text",
    "set_status",
]

#: The channel variable the dialplan reads after AGI() returns.
STATUS_VARIABLE = "FASTAGI_STATUS"
#: FreePBX sets it on internal calls: the extension the device belongs to, which stays
#: right when CALLERID(num) was rewritten (outbound CID, a follow-me, a device-and-user
#: login).
AMPUSER_VARIABLE = "AMPUSER"
#: What a caller without any caller id is called in the history and the alarm.
UNKNOWN_CALLER = "unknown"
#: A caller id is an extension or a SIP user name; longer text is cut (a caller id of
#: kilobytes is not a name anybody needs to hear).
MAX_CALLER_TEXT = 40
# A status write after a hang-up is a courtesy to the dialplan, not worth a long wait.
_STATUS_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as far as the flow can tell.

    ``extension`` is the text to record (digits, or a bounded copy of whatever the caller
    id said); ``known`` is True only when it is a plain extension number, the only form
    that is looked up in the directory or compared with deactivators. ``trusted`` is False
    for a call the flow must refuse (``FlowSettings.untrusted_caller``); ``seen`` is what
    the channel showed, for the history.
    """

    extension: str
    known: bool
    source: str  # "AMPUSER", "endpoint", "callerid" or "none"
    trusted: bool = True
    seen: tuple[tuple[str, str], ...] = ()

    @property
    def spoken(self) -> str:
        """The extension for a prompt: digits one by one ("1 0 1"), else the text."""
        return " ".join(self.extension) if self.known else self.extension


async def caller_identity(session: AgiSession, settings: FlowSettings) -> Caller:
    """The caller's extension, from what an outside caller cannot set.

    1. FreePBX's AMPUSER, set from the device on internal calls (``sub-user-callerid``).
    2. The PJSIP endpoint the call came in on, when it is named like an extension (as
       FreePBX names an extension's endpoint): chan_pjsip names its channels
       ``PJSIP/<endpoint>-<8 hex digits>`` (chan_pjsip.c, chan_pjsip_new), the value of
       ``CHANNEL(endpoint)``, so ``agi_channel`` tells it without a command.
    3. Anything else (a trunk's endpoint, another channel type) is untrusted: CALLERID(num)
       arrives from the far end. Refused unless ``settings.untrusted_caller`` is
       "callerid".
    """
    env = session.environment
    seen = [("channel", display_text(env.channel)[: MAX_CALLER_TEXT * 2])]
    if env.callerid:
        seen.append(("callerid", display_text(env.callerid)[:MAX_CALLER_TEXT]))
    ampuser = await session.get_variable(AMPUSER_VARIABLE)
    if ampuser:
        return _caller(ampuser, "AMPUSER", seen=tuple(seen))
    endpoint = pjsip_endpoint(env.channel)
    if endpoint is not None and is_extension(endpoint):
        return Caller(endpoint, known=True, source="endpoint", seen=tuple(seen))
    trusted = settings.untrusted_caller == "callerid"
    if env.callerid:
        return _caller(env.callerid, "callerid", trusted=trusted, seen=tuple(seen))
    return Caller(UNKNOWN_CALLER, known=False, source="none", trusted=trusted, seen=tuple(seen))


def pjsip_endpoint(channel: str) -> str | None:
    """The endpoint of a PJSIP channel name (``PJSIP/101-0000002a`` -> ``101``); None for
    another technology. An endpoint name may itself hold '-': the last one splits."""
    technology, _, rest = channel.partition("/")
    if technology != "PJSIP" or "-" not in rest:
        return None
    endpoint, _, sequence = rest.rpartition("-")
    return endpoint or None if sequence else None


def _caller(
    text: str, source: str, *, trusted: bool = True, seen: tuple[tuple[str, str], ...] = ()
) -> Caller:
    text = text.strip()
    if is_extension(text):
        return Caller(text, known=True, source=source, trusted=trusted, seen=seen)
    label = display_text(text)[:MAX_CALLER_TEXT].strip()
    return Caller(label or UNKNOWN_CALLER, known=False, source=source, trusted=trusted, seen=seen)


@dataclass(frozen=True, slots=True)
class CallLanguage:
    """What a call says and with which voice: its language's catalogue, and the voice
    to render it with (None: the site's ``[tts] voice``, English's)."""

    catalogue: Catalogue
    voice: str | None

    def text(self, key: str, /, **values: str) -> str:
        return self.catalogue.text(key, **values)


def call_language(
    languages: Languages, department: Department | None, default_language: str | None
) -> CallLanguage:
    """The language of a call from ``department``: the department's own, else the
    site's ``default_language``, else English (an unknown code too: a call speaks some
    language rather than none)."""
    code = (department.language if department else None) or default_language
    return CallLanguage(languages.get(code), languages.voice_for(code))


def call_details(session: AgiSession) -> dict[str, str]:
    """What every history event of a call carries, so the alarm's timeline can find the
    call's events (``HistoryStore.timeline`` links them by ``uniqueid``)."""
    env = session.environment
    return {"uniqueid": env.uniqueid, "channel": display_text(env.channel)}


def display_text(text: str) -> str:
    """``text`` with control characters (newlines, tabs, escapes, separators) turned
    into spaces: safe for one AGI word, a log field or a phone display."""
    if text.isascii() and text.isprintable():
        # Printable ASCII holds none of those categories (every event of a call passes
        # its channel name through here).
        return text
    return "".join(
        " " if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp", "Cs"} else char
        for char in text
    )


async def set_status(session: AgiSession, status: str) -> None:
    """Leave ``FASTAGI_STATUS`` for the dialplan, if Asterisk still listens.

    SET VARIABLE is allowed on a hung-up channel, so this works after the caller hangs
    up too; a connection that is already closed is not an error here.
    """
    if not session.usable:
        return
    try:
        async with asyncio.timeout(_STATUS_TIMEOUT):
            await session.set_variable(STATUS_VARIABLE, status)
    except (AgiError, TimeoutError) as exc:
        session.log.info("could not set %s=%s: %s", STATUS_VARIABLE, status, exc)
