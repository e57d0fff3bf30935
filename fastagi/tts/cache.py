"""The text-to-speech service: a file cache in front of ``render.py``.

A prompt's file name is a hash of everything that shapes its sound (text, voice, rate,
volume, level, sample rate, pipeline version), so a text renders once, survives restarts,
and a change of settings never plays a stale file. Concurrent requests for one text share
one render. Renders are tasks owned by the service, shielded from the callers: a caller that
gives up (the panicking phone hung up) does not kill a render that others wait for, or that
the next alarm will want from the cache.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from fastagi.config.tts import TtsSettings
from fastagi.tts.render import (
    FORMAT_VERSION,
    SCRATCH_PREFIX,
    TtsError,
    render_file,
    spoken_text,
)

log = logging.getLogger(__name__)

# Our files, and only ours: purge() never touches anything else in the directory.
_PROMPT_FILE = re.compile(r"^tts-[0-9a-f]{32}\.(sln|sln16)$")
# How many texts TextToSpeech remembers the names of (``_name``).
_NAMED_TEXTS = 4096


@dataclass(frozen=True, slots=True)
class Prompt:
    """A rendered prompt.

    ``asterisk_name`` is what STREAM FILE, GET DATA and Playback take: the path as Asterisk
    sees it, without extension (Asterisk appends the extension of the format it picks).
    """

    host_path: Path
    asterisk_name: str

    def seconds(self) -> float:
        """How long the rendered prompt plays: signed linear 16-bit mono, 8 kHz (``.sln``)
        or 16 kHz (``.sln16``) (Asterisk's format_sln.c)."""
        rate = 16000 if self.host_path.suffix == ".sln16" else 8000
        return self.host_path.stat().st_size / (2 * rate)


class TextToSpeech:
    """Renders texts to prompts Asterisk can play, caching them on disk.

    One instance per server, built from ``settings.tts``; close it with ``aclose()`` (or use
    ``async with``) to stop renders still running at shutdown.
    """

    def __init__(self, settings: TtsSettings) -> None:
        self._settings = settings
        self._inflight: dict[str, asyncio.Task[Prompt]] = {}
        self._slots = asyncio.Semaphore(settings.max_parallel_renders)
        self._renders_started = 0
        self._closed = False
        # (text, clip, voice) -> (spoken text, key, prompt): a call asks for the same few
        # texts again and again (its question, "Alarm activated."), and cleaning, hashing
        # and naming one took about as long as the stat that finds it on disk.
        self._named: dict[tuple[str, bool, str | None], tuple[str, str, Prompt]] = {}

    @property
    def settings(self) -> TtsSettings:
        return self._settings

    @property
    def renders_started(self) -> int:
        """How many renders (child processes) this service has started; cache hits add none."""
        return self._renders_started

    def prompt_for(self, text: str, *, clip: bool = False, voice: str | None = None) -> Prompt:
        """Where ``text`` is (or will be) rendered; pure, touches no file.

        Raises TtsError for a blank or over-long text.
        """
        return self._name(text, clip, voice)[2]

    def is_rendered(self, text: str, *, clip: bool = False, voice: str | None = None) -> bool:
        """Whether ``text`` is on disk, ready to play without a render."""
        try:
            return _is_rendered(self.prompt_for(text, clip=clip, voice=voice).host_path)
        except TtsError:
            return False

    # The timeout also bounds the shared render task this call may start, which an
    # asyncio.timeout around the call could not reach.
    async def render(
        self,
        text: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        clip: bool = False,
        voice: str | None = None,
    ) -> Prompt:
        """The prompt for ``text``, rendered now unless already on disk or on its way.

        ``clip``: a piece played between others, its silences trimmed (render_file).
        ``voice`` (an espeak-ng voice id, a language's: "pl") replaces ``settings.voice``
        for this text; it is part of the cache key.

        ``timeout`` (default ``render_timeout``) bounds this call's wait, queueing
        included, and a render this call starts is killed after that long. Raises TtsError
        when the text is blank or too long, or the render fails or times out.
        """
        if self._closed:
            raise TtsError("text-to-speech service is closed")
        limit = self._settings.render_timeout if timeout is None else timeout
        spoken, key, prompt = self._name(text, clip, voice)
        task = self._inflight.get(key)
        started = task is None
        if task is None:
            # No await between this check and registering the task, so two callers can
            # never both start a render of one text. A stat of a local directory takes
            # microseconds: cheaper inline than a trip through a thread pool.
            if _is_rendered(prompt.host_path):
                return prompt
            task = asyncio.create_task(
                self._render(spoken, prompt, limit, clip=clip, voice=voice), name=f"tts-{key}"
            )
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        try:
            if started:
                # The task bounds itself by ``limit``, and by the time it fails it has
                # killed its processes and left _inflight, so a retry starts afresh.
                return await asyncio.shield(task)
            async with asyncio.timeout(limit):
                return await asyncio.shield(task)
        except TimeoutError:
            raise TtsError(f"no prompt within {limit:g} s for {spoken[:40]!r}") from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or current.cancelling() == 0):
                # The render was cancelled by aclose(), not this caller.
                raise TtsError("text-to-speech service closed during the render") from None
            raise

    async def prerender(
        self,
        texts: Iterable[str],
        *,
        clips: Iterable[str] = (),
        parallel: int = 1,
        voice: str | None = None,
    ) -> dict[str, Prompt | TtsError]:
        """Render ``clips`` (``render(clip=True)``), then ``texts``, ahead of need, with
        ``voice`` (a language's; None: the site's); never raises TtsError.

        At most ``parallel`` renders at a time: leave one of ``max_parallel_renders`` free,
        so a live call's render does not queue behind a batch of departments. Each text
        maps to its prompt or to the error that stopped it (also logged); the alarm falls
        back to built-in sounds for those.
        """
        results: dict[str, Prompt | TtsError] = {}
        work = [(clip, True) for clip in dict.fromkeys(clips)]
        work += [(text, False) for text in dict.fromkeys(texts)]
        pending = iter(work)

        async def worker() -> None:
            # One shared iterator: each worker takes the next text when its last is done.
            for text, clip in pending:
                try:
                    results[text] = await self.render(text, clip=clip, voice=voice)
                except TtsError as exc:
                    log.warning("cannot prerender prompt", extra={"text": text[:80], "error": exc})
                    results[text] = exc

        await asyncio.gather(*(worker() for _ in range(max(1, min(parallel, len(work))))))
        return results

    async def purge(self, keep: Iterable[str]) -> int:
        """Delete our prompt files other than those of ``keep``; returns how many.

        Also removes scratch directories left by a crash. Prompts being rendered right now
        are kept, whatever ``keep`` says.
        """
        names = {self.prompt_for(text).host_path.name for text in keep}
        names |= {self._prompt(key).host_path.name for key in self._inflight}
        # A scratch directory younger than this may belong to a render still running.
        stale_before = time.time() - 2 * self._settings.render_timeout - 60
        return await asyncio.to_thread(
            _purge, self._settings.directory, frozenset(names), stale_before
        )

    async def aclose(self) -> None:
        """Kill renders still running and refuse new ones."""
        self._closed = True
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> TextToSpeech:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _name(self, text: str, clip: bool, voice: str | None) -> tuple[str, str, Prompt]:
        """The spoken form of ``text``, its cache key and its prompt (remembered)."""
        named = self._named.get((text, clip, voice))
        if named is None:
            spoken = spoken_text(text, self._settings.max_text_length)
            key = self._key(spoken, clip=clip, voice=voice)
            named = (spoken, key, self._prompt(key))
            if len(self._named) >= _NAMED_TEXTS:
                # Texts come from the directory and the catalogues, so this bound is
                # only reached by a site that renamed a lot; start again rather than grow.
                self._named.clear()
            self._named[(text, clip, voice)] = named
        return named

    def _key(self, spoken: str, *, clip: bool = False, voice: str | None = None) -> str:
        settings = self._settings
        material: list[object] = [
            FORMAT_VERSION,
            spoken,
            voice or settings.voice,
            settings.rate,
            settings.volume,
            settings.peak_dbfs,
            settings.sample_rate,
        ]
        if clip:
            # Appended only for clips, so the keys (file names) of whole texts stay as
            # they were and a site's cache survives the upgrade.
            material.append("clip")
        # JSON keeps the fields apart unambiguously; 128 bits of SHA-256 never collide in
        # a directory of a few hundred prompts.
        digest = hashlib.sha256(json.dumps(material, ensure_ascii=False).encode("utf-8"))
        return digest.hexdigest()[:32]

    def _prompt(self, key: str) -> Prompt:
        stem = f"tts-{key}"
        return Prompt(
            host_path=self._settings.directory / f"{stem}.{self._settings.extension()}",
            asterisk_name=posixpath.join(self._settings.asterisk_dir(), stem),
        )

    async def _render(
        self, spoken: str, prompt: Prompt, limit: float, *, clip: bool, voice: str | None
    ) -> Prompt:
        started = time.monotonic()
        settings = self._settings
        if voice is not None:
            settings = settings.model_copy(update={"voice": voice})
        try:
            # The limit covers the wait for a slot too: it is what the caller waits at most.
            async with asyncio.timeout(limit), self._slots:
                self._renders_started += 1
                await render_file(spoken, settings, prompt.host_path, clip=clip)
        except TimeoutError:
            raise TtsError(
                f"no prompt within {limit:g} s for {spoken[:40]!r}: the render was killed"
                " (espeak-ng hung, the disk is slow, or too many renders queued)"
            ) from None
        log.info(
            "rendered prompt",
            extra={
                "file": prompt.host_path.name,
                "seconds": round(time.monotonic() - started, 3),
                "text": spoken[:80],
            },
        )
        return prompt

    def _forget(self, key: str, task: asyncio.Task[Prompt]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        # Mark the outcome as seen: when every caller has timed out, asyncio would
        # otherwise log "exception was never retrieved" for a failure already reported.
        if not task.cancelled():
            task.exception()


def _is_rendered(path: Path) -> bool:
    # Non-empty, because an empty file plays as nothing at all; files only appear through
    # os.replace after a complete render, so a present, non-empty file is whole.
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _purge(directory: Path, keep: frozenset[str], stale_before: float) -> int:
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise TtsError(f"cannot list prompts in {directory}: {exc}") from exc
    for entry in entries:
        try:
            if _PROMPT_FILE.match(entry.name) and entry.name not in keep:
                os.unlink(entry.path)
                removed += 1
            elif (
                entry.name.startswith(SCRATCH_PREFIX)
                and entry.is_dir(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_mtime < stale_before
            ):
                shutil.rmtree(entry.path, ignore_errors=True)
        except FileNotFoundError:
            continue  # removed by someone else meanwhile
        except OSError as exc:
            raise TtsError(f"cannot remove {entry.path}: {exc}") from exc
    return removed
