"""What the panic and deactivation calls say, and how: text-to-speech, else built-in sounds.

Every prompt is a text for the TTS service plus a fallback of Asterisk core sounds
(asterisk-core-sounds-en, see :mod:`fastagi.tts.fallback`) for when rendering fails or
takes longer than ``FlowSettings.render_timeout``. An alarm must never wait on espeak-ng.

Department names and caller ids in these texts are untrusted. They reach Asterisk only
inside a rendered audio file (the TTS speaks them literally) or spelled with built-in
sounds (:func:`fastagi.tts.spell` skips anything it cannot say); the file names passed
to Asterisk are our own.

Playback goes through ``EXEC Playback`` rather than STREAM FILE: a file Asterisk cannot
open makes STREAM FILE answer -1, indistinguishable from a hang-up, whereas Playback
carries on; and Playback takes several files joined with '&'. GET DATA does not (see
:func:`ask`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fastagi.agi.errors import AgiHangup
from fastagi.agi.session import AgiSession, DigitsResult
from fastagi.domain.language import FIELDS, Catalogue
from fastagi.tts import Prompt, TtsError, spell

__all__ = [
    "PromptFiles",
    "Speaker",
    "ask",
    "files_for",
    "files_listening",
    "play",
    "say",
    "spoken_fixed_texts",
]

logger = logging.getLogger(__name__)

#: Every key interrupts a prompt that asks for one.
ANY_KEY = "0123456789*#"
#: How long each WAIT FOR DIGIT lasts while a question renders (:func:`files_listening`):
#: the longest a rendered question waits to be asked.
LISTEN_SLICE_MS = 250

# ---- texts ---------------------------------------------------------------------------
# {department} is a department name or UNKNOWN_LABEL; the rest is ours. These are the
# English catalogue's texts (fastagi/config/catalogues/en.toml; a unit test keeps them
# equal), for the tests and tools that prerender them: the flows speak their caller's
# language from the catalogue (fastagi/flows/common.py call_language).

PANIC_QUESTION = "Panic alarm for {department}. Press 1 to confirm the alarm, or 2 to cancel."
PANIC_DISPLAY = "PANIC {department}: 1 = confirm, 2 = cancel"
UNKNOWN_LABEL = "unknown department, extension {extension}"
PANIC_ACTIVATED = "Alarm activated."
PANIC_CANCELLED = "Alarm cancelled."
NOT_AUTHORISED = "This extension may not deactivate alarms. Goodbye."
LOCKED_OUT = "Too many wrong PINs. This extension is locked for now. Try again later."
NO_ALARM = "No alarm is active. Goodbye."
PIN_PROMPT = "To deactivate the alarm, enter your PIN, followed by the hash key."
PIN_WRONG = "Wrong PIN. Enter your PIN, followed by the hash key."
WRONG_PIN_FINAL = "Wrong PIN. Goodbye."
MENU_ITEM = "Press {key} for {department}."
#: How the deactivation menu names a drill, so nobody takes it for an alarm.
DRILL_LABEL = "the test of {department}"
MENU_ALL = "Press {key} for all alarms."
DEACTIVATED_ONE = "Alarm deactivated: {department}."
DEACTIVATED_ALL = "All alarms deactivated."
NOTHING_CHOSEN = "No alarm was chosen. Goodbye."
UNAVAILABLE = (
    "The system cannot deactivate alarms right now. The alarm goes on. "
    "Please try again in a moment."
)
# The drill by phone (*558): as discreet as the trigger, no word of a panic or an alarm.
DRILL_PIN_PROMPT = "Enter the test PIN, followed by the hash key."
DRILL_PIN_WRONG = "Wrong PIN. Enter the test PIN, followed by the hash key."
DRILL_STARTED = "Test started."
DRILL_BUSY = "A test cannot start now. Goodbye."
DRILL_NOT_AVAILABLE = "This feature is not available. Goodbye."


def panic_question(label: str) -> str:
    """The confirmation question for a department name (or an UNKNOWN_LABEL text)."""
    return PANIC_QUESTION.format(department=label)


def fixed_texts() -> list[str]:
    """Every prompt text that names nothing: worth rendering at start-up."""
    return [
        PANIC_ACTIVATED,
        PANIC_CANCELLED,
        NOT_AUTHORISED,
        LOCKED_OUT,
        NO_ALARM,
        PIN_PROMPT,
        PIN_WRONG,
        WRONG_PIN_FINAL,
        DEACTIVATED_ALL,
        NOTHING_CHOSEN,
        UNAVAILABLE,
        DRILL_PIN_PROMPT,
        DRILL_PIN_WRONG,
        DRILL_STARTED,
        DRILL_BUSY,
        DRILL_NOT_AVAILABLE,
    ]


def spoken_fixed_texts(catalogue: Catalogue) -> list[str]:
    """Every text of ``catalogue`` a call speaks that names nothing (no display text, no
    empty acknowledgement): worth rendering ahead in the language's voice."""
    return [
        text
        for key, fields in FIELDS.items()
        if not fields and not key.endswith("display") and (text := catalogue.text(key)).strip()
    ]


# ---- built-in fallbacks (core sounds, en) ---------------------------------------------
# There is no "alarm", "department" or "PIN" among the core sounds: these say the gist.

#: "Urgent. If this is correct, press 1." (2 still cancels; it is just not announced.)
FALLBACK_QUESTION = ("vm-Urgent", "if-correct-press", "digits/1")
#: The neutral mode's: "If this is correct, press 1.", no word of urgency.
FALLBACK_NEUTRAL_QUESTION = ("if-correct-press", "digits/1")
#: A neutral acknowledgement, when the catalogue gives one: "Thank you."
FALLBACK_NEUTRAL_ACK = ("auth-thankyou",)
#: The tone mode's question: a short beep, then the digit (core sound ``beep``).
TONE = ("beep",)
FALLBACK_ACTIVATED = ("activated",)
FALLBACK_CANCELLED = ("cancelled",)
#: "This feature is not available on this line."
FALLBACK_NOT_AUTHORISED = ("feature-not-avail-line",)
#: "Please try your call again later."
FALLBACK_LOCKED_OUT = ("please-try-call-later",)
#: "No ... activated."
FALLBACK_NO_ALARM = ("vm-no", "activated")
#: "Please enter your password followed by the pound key."
FALLBACK_PIN = ("agent-pass",)
#: "Password incorrect. Please enter your password followed by the pound key."
FALLBACK_PIN_WRONG = ("auth-incorrect",)
#: "Login incorrect. Goodbye."
FALLBACK_WRONG_PIN_FINAL = ("vm-incorrect", "vm-goodbye")
FALLBACK_DEACTIVATED = ("de-activated",)
FALLBACK_GOODBYE = ("vm-goodbye",)
#: "I'm sorry. All circuits are busy now. Please try your call again later." (There is no
#: "temporary error" sound among the core sounds of the sandbox's Asterisk.)
FALLBACK_UNAVAILABLE = ("im-sorry", "all-circuits-busy-now", "please-try-call-later")
#: "Please try your call again later." (a test cannot start now)
FALLBACK_DRILL_BUSY = ("please-try-call-later",)


def fallback_menu_item(key: str, extension: str) -> list[str]:
    """ "Press <key> for extension <1 0 1>": the alarm named by its caller's extension."""
    return ["vm-press", f"digits/{key}", "for", "extension", *spell(extension)]


def fallback_menu_drill(key: str) -> list[str]:
    """ "Press <key> for T. E. S. T.": a drill in the menu."""
    return ["vm-press", f"digits/{key}", "for", *spell("test")]


def fallback_menu_all(key: str) -> list[str]:
    return ["vm-press", f"digits/{key}"]


def _voice(voice: str | None) -> dict[str, str]:
    # Only a language's own voice is passed: the site's default voice is the TTS
    # service's, and a Speaker that knows one voice need not take the argument.
    return {} if voice is None else {"voice": voice}


# ---- playing them ----------------------------------------------------------------------


class Speaker(Protocol):
    """What the flows need of :class:`fastagi.tts.TextToSpeech`."""

    async def render(
        self,
        text: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        voice: str | None = None,
    ) -> Prompt: ...


@dataclass(frozen=True, slots=True)
class PromptFiles:
    """What to hand Asterisk for one prompt; ``rendered`` False means the fallback."""

    files: tuple[str, ...]
    rendered: bool

    @property
    def joined(self) -> str:
        return "&".join(self.files)


async def files_for(
    tts: Speaker,
    text: str,
    fallback: Sequence[str],
    *,
    render_timeout: float,
    voice: str | None = None,
) -> PromptFiles:
    """The files to play for ``text`` (in ``voice``, None: the site's): its rendered
    prompt, or ``fallback``."""
    try:
        prompt = await tts.render(text, timeout=render_timeout, **_voice(voice))
    except TtsError as exc:
        logger.warning("prompt falls back to built-in sounds", extra={"error": str(exc)})
        return PromptFiles(tuple(fallback), rendered=False)
    return PromptFiles((prompt.asterisk_name,), rendered=True)


async def files_listening(
    session: AgiSession,
    tts: Speaker,
    text: str,
    fallback: Sequence[str],
    *,
    render_timeout: float,
    answers: str,
    voice: str | None = None,
) -> PromptFiles | str:
    """:func:`files_for`, listening to the caller while ``text`` renders: a key among
    ``answers`` pressed before the prompt is ready is returned instead of the files.

    Asterisk drops a key that arrives while no command runs (res_agi's ``run_agi`` reads
    and discards the channel's frames between commands), and a render may take seconds
    on a loaded machine, while a caller who knows the question presses at once. So while
    the render runs, WAIT FOR DIGIT listens in slices of LISTEN_SLICE_MS (it plays
    nothing: the room hears no more than before). Another key is logged and ignored: the
    caller hears the question. A prompt on disk already is ready without a command.
    Raises AgiHangup if the caller hangs up meanwhile.
    """
    render = asyncio.ensure_future(
        files_for(tts, text, fallback, render_timeout=render_timeout, voice=voice)
    )
    try:
        # A cached prompt comes back in the render's first step (TextToSpeech.render does
        # not suspend for one): yield once, so that it is asked without a command first.
        await asyncio.sleep(0)
        while not render.done():
            key = await session.wait_for_digit(LISTEN_SLICE_MS)
            if key is None:
                continue
            if key in answers:
                return key
            logger.info("key before the prompt ignored", extra={"prompt": text[:40]})
        return render.result()
    finally:
        # The caller answered (or hung up) first: this call no longer waits for the
        # render. TextToSpeech shields its own render, which still lands in the cache.
        render.cancel()


async def play(session: AgiSession, files: PromptFiles) -> None:
    """Play ``files`` to the end. Raises AgiHangup if the caller hangs up."""
    if not files.files:
        return
    # Playback returns -1 when the channel hangs up during (or before) playback.
    if await session.exec("Playback", files.joined) < 0:
        session.hung_up = True
        raise AgiHangup("Playback returned -1 (hangup)", command="EXEC Playback")


async def say(
    session: AgiSession,
    tts: Speaker,
    text: str,
    fallback: Sequence[str],
    *,
    render_timeout: float,
    voice: str | None = None,
) -> PromptFiles:
    """Play ``text`` (or its fallback) to the end. Raises AgiHangup if the caller hangs up."""
    files = await files_for(tts, text, fallback, render_timeout=render_timeout, voice=voice)
    await play(session, files)
    return files


async def ask(
    session: AgiSession, files: PromptFiles, *, timeout_ms: int, max_digits: int
) -> DigitsResult:
    """Play ``files`` and collect up to ``max_digits`` digits; a key pressed during a
    prompt interrupts it and counts, '#' ends the input, and ``timeout_ms`` applies to
    each digit. Raises AgiHangup if the caller hangs up.

    GET DATA plays one file only (handle_getdata -> ast_app_getdata_full, which does not
    split on '&' the way the dialplan's Read() does), so the files before the last are
    played with STREAM FILE, interruptible by any key, and GET DATA plays the last.
    """
    *lead, last = files.files or ("",)
    for name in lead:
        key = await session.stream_file(name, ANY_KEY)
        if key is None:
            continue
        if key == "#" or max_digits == 1:
            return DigitsResult("" if key == "#" else key, timed_out=False)
        # The first digit came during a prompt: collect the rest without one.
        rest = await session.get_data("", timeout_ms=timeout_ms, max_digits=max_digits - 1)
        return DigitsResult(key + rest.digits, rest.timed_out)
    return await session.get_data(last, timeout_ms=timeout_ms, max_digits=max_digits)


# ---- recorded location (*557, fastagi/flows/record_location.py) ----------------------

RECORD_INSTRUCTION = (
    "After the tone, say where you are, for example the room, the floor and the wing."
    " Press the hash key when you are done."
)
RECORD_YOU_SAID = "You said:"
RECORD_MENU = "Press 1 to keep it, 2 to record it again, or 3 to delete your recorded location."
RECORD_NOTHING = "Nothing was recorded."
RECORD_KEPT = "Your location is saved."
RECORD_DELETED = "Your recorded location is deleted."
#: "Please leave your message after the tone. When done, hang up or press the pound key."
FALLBACK_RECORD_INSTRUCTION = ("vm-intro",)
#: "Press 1 to accept this recording, 2 to listen to it, 3 to re-record." (2 and 3 differ
#: from ours; the gist, keep with 1, holds.)
FALLBACK_RECORD_MENU = ("vm-review",)
FALLBACK_RECORD_KEPT = ("vm-msgsaved",)
FALLBACK_RECORD_DELETED = ("vm-deleted",)
FALLBACK_RECORD_NOTHING = ("im-sorry",)


def recording_texts() -> list[str]:
    """The recorded-location call's texts: worth rendering at start-up."""
    return [
        RECORD_INSTRUCTION,
        RECORD_YOU_SAID,
        RECORD_MENU,
        RECORD_NOTHING,
        RECORD_KEPT,
        RECORD_DELETED,
    ]
