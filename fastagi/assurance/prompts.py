"""Text-to-speech: a prompt renders now, and Asterisk plays it from where it looks.

Asterisk plays the freshly rendered prompt the way a page plays an announcement: a
``Local`` channel into the announce context with ``PANIC_PROMPTS`` set to the prompt's
name as Asterisk sees it (``tts.asterisk_directory``). Playback streams in real time,
so a channel that stays up for the prompt's length played it; one that hangs up at
once could not open it (missing, or unreadable by Asterisk's user). The AMI user may not
ask Asterisk about a file directly (``STAT()`` and ``FILE()`` are refused over AMI), and
the playback is the proof that matters anyway.

Where Asterisk runs as a user this host knows (``CoreSettings``) and sees the same path,
every prompt file is also checked for that user's read permission, and a refusal is
explained: which directory or file, its mode and owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

from fastagi.ami import AmiClient, EventStream
from fastagi.assurance.asterisk import exists
from fastagi.assurance.files import Identity, describe, first_refusal, unreadable
from fastagi.assurance.result import Finding
from fastagi.assurance.runner import Check, Context
from fastagi.tts import Prompt, TextToSpeech, TtsError

CHECK_TEXT = "This is the panic alarm check."
# A prompt that played lasted its length (Playback streams in real time); one that could
# not be opened hangs up within milliseconds. Half the length is a wide margin either way.
PLAYED_FRACTION = 0.5
HANGUP_MARGIN = 10.0
_REMEDY = (
    "the prompt directory must belong to Asterisk's group with mode 2770 (fastagi freepbx"
    " install makes it so), and tts.asterisk_directory must name it as Asterisk sees it"
)


async def tts(context: Context) -> Finding:
    settings = context.settings.tts
    client = context.ami
    speech = TextToSpeech(settings)
    try:
        prompt = speech.prompt_for(CHECK_TEXT)
        started = time.monotonic()
        # Rendered afresh each time: a cached file would prove nothing about espeak-ng.
        await asyncio.to_thread(_remove, prompt.host_path)
        try:
            await speech.render(CHECK_TEXT)
        except TtsError as exc:
            return Finding.fail(
                f"cannot render a prompt in {settings.directory}: {exc}",
                "are espeak-ng and sox installed, and is the directory writable by the"
                " server's user?",
            )
        rendered = time.monotonic() - started
    finally:
        await speech.aclose()
    if not await exists(client, context.settings.alarm.announce_context, "s"):
        return Finding.skip(
            f"rendered in {rendered:.1f} s; Asterisk's playback not checked: context"
            f" {context.settings.alarm.announce_context} is not loaded (see dialplan)"
        )
    core = await client.action("CoreSettings")
    user = core.get("CoreRunUser") or ""
    who = await _asterisk_identity(core.get("CoreRunUser"), core.get("CoreRunGroup"))
    length = await asyncio.to_thread(prompt.seconds)
    played = await _played_seconds(client, context.settings.alarm.announce_context, prompt)
    as_user = f"Asterisk (user {user})" if user else "Asterisk"
    if played < PLAYED_FRACTION * length:
        why = await asyncio.to_thread(_why_unreadable, prompt, who, settings.asterisk_directory)
        return Finding.fail(
            f"{as_user} could not play {prompt.asterisk_name} (it stopped after"
            f" {played:.1f} s of {length:.1f}){why}",
            _REMEDY,
        )
    message = (
        f"rendered in {rendered:.1f} s; {as_user} played {prompt.asterisk_name} ({length:.1f} s)"
    )
    if who is None or settings.asterisk_directory not in (None, str(settings.directory)):
        return Finding.ok(message)
    others = await asyncio.to_thread(_unreadable_prompts, settings.directory, who)
    if others:
        listed = ", ".join(others[:5])
        return Finding.warn(
            f"{message}; but {len(others)} other prompt(s) {who.name} cannot read: {listed}",
            _REMEDY + "; then `chmod g+r` the files",
        )
    return Finding.ok(message)


async def _played_seconds(client: AmiClient, announce: str, prompt: Prompt) -> float:
    """How long a Local channel playing ``prompt`` stayed up after it answered."""
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    loop = asyncio.get_running_loop()
    async with client.events("Hangup") as events:
        result = await client.originate(
            f"Local/s@{announce}/n",
            context=announce,
            exten="s",
            variables={"PANIC_PROMPTS": prompt.asterisk_name, "PANIC_LEAD_IN": "0"},
            timeout_ms=10_000,
            channel_id=one,
            other_channel_id=two,
        )
        answered = loop.time()
        if not result.answered:
            return 0.0
        length = await asyncio.to_thread(prompt.seconds)
        async with asyncio.timeout(length + HANGUP_MARGIN):
            await _hangup_of(events, {one, two})
    # A failed playback may hang up before the OriginateResponse arrives.
    return max(0.0, loop.time() - answered)


async def _hangup_of(events: EventStream, uniqueids: set[str]) -> None:
    async for message in events:
        if message.event == "Hangup" and message.get("Uniqueid") in uniqueids:
            return


async def _asterisk_identity(user: str | None, group: str | None) -> Identity | None:
    if not user:
        return None
    return await asyncio.to_thread(Identity.of, user, group or None)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _why_unreadable(prompt: Prompt, who: Identity | None, asterisk_directory: str | None) -> str:
    if who is not None and asterisk_directory is None:
        refusal = first_refusal(prompt.host_path, who)
        if refusal is not None:
            return f": {who.name} may not read {refusal} ({describe(refusal)})"
    directory = prompt.host_path.parent
    return f"; here it is {prompt.host_path}, in {directory} ({describe(directory)})"


def _unreadable_prompts(directory: Path, who: Identity) -> list[str]:
    """``tts-....sln (0600 fastagi:fastagi)`` for each prompt ``who`` cannot read."""
    files = sorted(directory.glob("tts-*.sln*"))
    return [f"{path.name} ({describe(refusal)})" for path, refusal in unreadable(files, who)]


CHECKS = (Check("tts", "a prompt renders and Asterisk plays it", tts, ("ami",)),)
