"""One page: the announcement played once to every device of a paging group.

Theory of operation (verified against the sandbox's Asterisk 22; see extensions_custom.conf
for the dialplan side). We originate ``Local/s@fastagi-panic-page/n`` with our own
``ChannelId``, which becomes the ``;1`` half's Uniqueid and, since both halves and every
channel dialled from them share it (Local channels and Page()'s dials inherit the linked
id), the ``Linkedid`` of every channel of this page. The ``;2`` half runs Page(): it dials
the devices, answers when the first one answers, and joins the ConfBridge as its marked
user; then the ``;1`` half (what Originate connects to ``fastagi-panic-announce``) plays
the prompts and hangs up. Page()'s callees have ``end_marked``, so they are hung up when
the pager leaves: one Hangup of ``;1`` ends the whole page within milliseconds.

What the AMI event stream shows of it, per channel (Asterisk 22):

- ``Newchannel`` of ``;1``, ``;2`` and each device (``PJSIP/201-0000001a``), Linkedid ours;
- ``Newstate`` ChannelState 6 (Up) when a device answers, then ``ConfbridgeJoin``;
- ``Hangup`` of each. A device that does not answer rings until Page()'s timeout or until
  the page ends, and never goes Up.
- ``DialBegin`` of each device, once its INVITE is out. Page() dials its devices one
  after the other on the ``;2`` half, each with ``ast_dial_run(dial, chan, 1)``
  (apps/app_page.c page_exec); main/dial.c begin_dial_channel publishes ``DialBegin``
  only after ``ast_call`` returned, and chan_pjsip's ``chan_pjsip_call`` creates and sends
  the INVITE in a task it waits for (``ast_sip_push_task_wait_serializer``), so the
  INVITE left before the event. Dialled asynchronously, the event has no caller
  (``ast_channel_publish_dial(async ? NULL : chan, ...)``): only ``Dest*`` fields, so it is
  matched on ``DestLinkedid``. A device that cannot be dialled has no ``DialBegin``; the
  ``;2`` half's ``ConfbridgeJoin`` (Page() is past its dial loop, about 0.5 s later) or
  its ``Hangup`` says that every device was tried. :meth:`Pager.page` sets ``dialled``
  then, so the loop keeps the page lock until the page's INVITEs are out.

Subscribe before originating, or the first events can be missed. Originate's own reply
(``OriginateResponse``) goes to :meth:`AmiClient.originate`, not to the stream.

What each device did (``CycleResult.devices``, recorded in the ``page_cycle`` event, read
by a drill's report): a leg is a device's channel (``PJSIP/201-0000001a`` is ``PJSIP/201``'s);
answered when it went Up, busy when its ``Hangup`` cause is 17 (user busy, as a 486 maps
to), no answer otherwise; a device without a leg was not dialled (no contact, a bad name).

Failures of any kind end in a :class:`CycleResult` with ``error`` set: the paging loop
records it and pages again at the next cycle, or as soon as the AMI connection is back
when the page was never sent for lack of it (``unsent``); nothing here raises into the
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fastagi.ami import AmiClient, AmiError, Message
from fastagi.ami.routing import EventRouter
from fastagi.config import AlarmSettings
from fastagi.domain.drill import ANSWERED, BUSY, NO_ANSWER, NOT_DIALLED, device_of
from fastagi.domain.rules import join_items

logger = logging.getLogger(__name__)

_EVENTS = ("Newchannel", "Newstate", "ConfbridgeJoin", "Hangup", "DialBegin")
_UP = "6"  # ChannelState of ast_channel_state AST_STATE_UP (include/asterisk/channelstate.h)
_USER_BUSY = "17"  # AST_CAUSE_USER_BUSY (include/asterisk/causes.h): a 486 Busy Here
# Time to wait for the Hangup events of a page that failed or was hung up.
_SETTLE_SECONDS = 5.0
# How often a page in progress checks that the AMI connection is still there: its events
# are all we know of the page.
_WATCH_SECONDS = 1.0


@dataclass(frozen=True)
class CycleResult:
    """What one page did. ``error`` is None when at least one device answered."""

    dialled: int
    answered: int
    duration: float
    error: str | None = None
    channel_id: str | None = None
    cancelled: bool = False
    # What each device of the page did: ANSWERED, BUSY, NO_ANSWER or NOT_DIALLED.
    devices: Mapping[str, str] = field(default_factory=dict)
    # The Originate was never written: there was no AMI connection. Nobody heard this
    # page, and the loop pages again as soon as the connection is back.
    unsent: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def details(self) -> dict[str, object]:
        """For the ``page_cycle`` history event; ``unsent`` only on a page never sent (its
        error says why), which nobody heard and which the next page follows at once."""
        details: dict[str, object] = {
            "dialled": self.dialled,
            "answered": self.answered,
            "duration": round(self.duration, 3),
            "error": self.error,
            "channel_id": self.channel_id,
            "cancelled": self.cancelled,
            "devices": dict(self.devices),
        }
        if self.unsent:
            details["unsent"] = True
        return details


@dataclass
class PagingCounts:
    """Pages since start (each cycle of each alarm this server paged), read by the
    metrics when scraped."""

    pages: int = 0
    failed: int = 0  # the page could not be placed, or no device answered
    legs_dialled: int = 0
    legs_answered: int = 0

    def add(self, result: CycleResult) -> None:
        self.pages += 1
        self.failed += 0 if result.ok else 1
        self.legs_dialled += result.dialled
        self.legs_answered += result.answered


@dataclass
class _Page:
    """One page in flight: what the event stream told us so far."""

    channel_id: str
    devices: int = 0  # how many devices Page() dials
    channel: str | None = None  # the ;1 half's name, from its Newchannel
    legs: dict[str, str] = field(default_factory=dict)  # uniqueid -> device channel name
    answered: set[str] = field(default_factory=set)
    hung_up: set[str] = field(default_factory=set)  # uniqueids
    causes: dict[str, str] = field(default_factory=dict)  # uniqueid -> Hangup cause
    dial_begun: set[str] = field(default_factory=set)  # uniqueids of the legs
    cancelled: bool = False
    unsent: bool = False  # CycleResult.unsent
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    # Every device was dialled (its INVITE is out) or could not be: see the theory above.
    dialled: asyncio.Event = field(default_factory=asyncio.Event)

    def feed(self, event: Message) -> None:
        kind = event.event
        if kind == "DialBegin":
            # Page()'s dials are asynchronous: no caller fields, only Dest* ones. The
            # Originate's own dial of ;1 has our id as its DestUniqueid.
            destination = event.get("DestUniqueid", "")
            if event.get("DestLinkedid") == self.channel_id and destination != self.channel_id:
                self.dial_begun.add(destination)
                if len(self.dial_begun) >= self.devices:
                    self.dialled.set()
            return
        if event.get("Linkedid") != self.channel_id:
            return
        uniqueid = event.get("Uniqueid", "")
        name = event.get("Channel", "")
        is_leg = not name.startswith("Local/")
        if not is_leg and uniqueid != self.channel_id and kind in ("ConfbridgeJoin", "Hangup"):
            self.dialled.set()  # the ;2 half is past Page()'s dial loop (or gone)
        if kind == "Newchannel":
            if uniqueid == self.channel_id:
                self.channel = name
            elif is_leg:
                self.legs[uniqueid] = name
        elif is_leg and (
            kind == "ConfbridgeJoin" or (kind == "Newstate" and event.get("ChannelState") == _UP)
        ):
            self.answered.add(uniqueid)
        elif kind == "Hangup":
            self.hung_up.add(uniqueid)
            self.causes[uniqueid] = event.get("Cause", "")
            if self.channel_id in self.hung_up and self.hung_up.issuperset(self.legs):
                self.ended.set()

    def verdict(self) -> str | None:
        """The error of a page that ended normally, or None when someone heard it."""
        if not self.legs:
            return "no device could be dialled"
        if not self.answered:
            return "cancelled before any answer" if self.cancelled else "no device answered"
        return None

    def device_outcomes(self, devices: Sequence[str]) -> dict[str, str]:
        """What each of ``devices`` did in this page (see the theory above)."""
        # Asterisk names a channel by its technology as registered ("PJSIP"), whatever
        # case the device was written in.
        wanted = {device.lower(): device for device in devices}
        outcomes = dict.fromkeys(devices, NOT_DIALLED)
        for uniqueid, name in self.legs.items():
            device = wanted.get(device_of(name).lower())
            if device is None or outcomes[device] == ANSWERED:
                continue
            if uniqueid in self.answered:
                outcomes[device] = ANSWERED
            else:
                busy = self.causes.get(uniqueid) == _USER_BUSY
                outcomes[device] = BUSY if busy else NO_ANSWER
        return outcomes

    @property
    def live_channels(self) -> list[str]:
        names = [name for uid, name in self.legs.items() if uid not in self.hung_up]
        if self.channel is not None and self.channel_id not in self.hung_up:
            names.insert(0, self.channel)
        return names


class Pager:
    """Pages over AMI; at most one page per alarm at a time (the loop sees to that)."""

    def __init__(self, ami: AmiClient, settings: AlarmSettings) -> None:
        self._ami = ami
        self._settings = settings
        self._inflight: dict[int, _Page] = {}
        # Each page's events by its channel id, the Linkedid of every channel of the page.
        self._events = EventRouter(ami, _page_of, *_EVENTS)
        # Hang-ups a late cancel() started from the event callback, which cannot await.
        self._hang_ups: set[asyncio.Task[None]] = set()
        self.counts = PagingCounts()

    def in_flight(self, alarm_id: int) -> bool:
        return alarm_id in self._inflight

    async def wait_connected(self) -> None:
        """Return once pages can be placed (AMI connected); at once if they can."""
        await self._ami.wait_connected()

    async def page(
        self,
        alarm_id: int,
        cycle: int,
        devices: Sequence[str],
        prompts: Sequence[str],
        *,
        caller_name: str = "",
        caller_number: str = "",
        sent: asyncio.Event | None = None,
        dialled: asyncio.Event | None = None,
    ) -> CycleResult:
        """Page ``devices`` with ``prompts`` once and wait until the page has ended.

        ``sent`` is set as soon as the Originate has been written to Asterisk (or the
        page failed before that); ``dialled`` once every device was dialled, i.e. its
        INVITE is out, or could not be (or the page failed or ended). The loop holds
        the alarm row from before ``sent`` until ``dialled``.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        page = _Page(
            f"panic-{alarm_id}-{cycle}-{uuid.uuid4().hex[:8]}",
            devices=len(devices),
            dialled=dialled or asyncio.Event(),
        )

        def result(error: str | None, placed: bool = True) -> CycleResult:
            page.dialled.set()
            if sent is not None:
                sent.set()
            done = CycleResult(
                dialled=len(page.legs),
                answered=len(page.answered),
                duration=loop.time() - started,
                error=error,
                channel_id=page.channel_id if placed else None,
                cancelled=page.cancelled,
                devices=page.device_outcomes(devices),
                unsent=page.unsent,
            )
            self.counts.add(done)
            return done

        try:
            device_list = join_items(devices, "devices to page")
            prompt_list = join_items(prompts, "prompts to play")
        except ValueError as exc:
            return result(str(exc), placed=False)
        if alarm_id in self._inflight:
            return result(f"alarm {alarm_id} already has a page in progress", placed=False)
        # Listening before the Originate is written, or its first events could be missed.
        self._events.add(page.channel_id, functools.partial(self._on_event, page))
        self._inflight[alarm_id] = page
        try:
            error = await self._run(
                page,
                self._variables(
                    alarm_id=alarm_id, cycle=cycle, device_list=device_list,
                    prompt_list=prompt_list, caller_name=caller_name,
                    caller_number=caller_number,
                ),
                sent,
            )  # fmt: skip
            return result(error)
        except Exception as exc:  # never into the loop: it records and goes on
            logger.exception("page of alarm %s failed", alarm_id)
            return result(f"unexpected error: {exc!r}")
        finally:
            del self._inflight[alarm_id]
            self._events.discard(page.channel_id)

    def _variables(
        self,
        *,
        alarm_id: int,
        cycle: int,
        device_list: str,
        prompt_list: str,
        caller_name: str,
        caller_number: str,
    ) -> dict[str, str]:
        settings = self._settings
        # Variables with "__" reach the ;2 half and, through ast_channel_inherit_variables,
        # the device channels Page() dials (where the b() Gosub adds the headers).
        # core_local.c copies all of ;1's variables to ;2, so the rest reach ;2 as well.
        return {
            "__PANIC_DEVICES": device_list,
            "__PANIC_ALERT_INFO": settings.alert_info,
            "__PANIC_CALL_INFO": settings.call_info,
            # A department name is data an administrator typed: a newline in it would be
            # refused by the AMI encoder and the alarm would page nobody.
            "PANIC_CALLER_NAME": _one_line(caller_name),
            "PANIC_CALLER_NUMBER": caller_number,
            "PANIC_PROMPTS": prompt_list,
            "PANIC_PAGE_TIMEOUT": str(settings.page_timeout),
            "PANIC_LEAD_IN": f"{settings.lead_in:g}",
            "PANIC_ALARM_ID": str(alarm_id),
            "PANIC_CYCLE": str(cycle),
        }

    async def _run(
        self, page: _Page, variables: dict[str, str], sent: asyncio.Event | None
    ) -> str | None:
        """Place the page and wait for its end; the error, or None when it was heard."""
        settings = self._settings
        # Not connected now: the Originate fails before it is written (AmiClient checks
        # the connection first), so the page certainly reached nobody.
        reachable = self._ami.connected
        originate = asyncio.create_task(
            self._ami.originate(
                f"Local/s@{settings.page_context}/n",
                context=settings.announce_context,
                exten="s",
                variables=variables,
                # ;1 is answered when Page() answers ;2, i.e. when the first device
                # answers; allow the ring time plus a margin.
                timeout_ms=(settings.page_timeout + 10) * 1000,
                channel_id=page.channel_id,
            )
        )
        try:
            # AmiClient.originate writes the action in its first step, before its first
            # await (AmiProtocol.request is synchronous): one turn of the loop sends it.
            await asyncio.sleep(0)
            if sent is not None:
                sent.set()
            try:
                outcome = await originate
            except AmiError as exc:
                page.unsent = not reachable
                await self._settle(page)
                return f"originate failed: {exc}"
            if not outcome.success:
                await self._settle(page)
                reason = "cancelled" if page.cancelled else outcome.reason_name
                return f"originate failed: {reason}"
            if not await self._wait_end(page, settings.max_page_seconds):
                if not self._ami.connected:
                    return "AMI connection lost during the page"
                await self._hang_up(page)
                await self._settle(page)
                return f"the page lasted more than {settings.max_page_seconds:g} s: hung up"
        finally:
            originate.cancel()
            with contextlib.suppress(asyncio.CancelledError, AmiError):
                await originate
        return page.verdict()

    def _on_event(self, page: _Page, event: Message) -> None:
        known = page.channel is not None
        page.feed(event)
        if page.cancelled and not known and page.channel is not None:
            # cancel() ran before ;1 existed: hang it up now that it has a name.
            task = asyncio.get_running_loop().create_task(self._hang_up(page))
            self._hang_ups.add(task)
            task.add_done_callback(self._hang_ups.discard)

    async def _wait_end(self, page: _Page, limit: float) -> bool:
        """Wait for the page to end; False on timeout or when the AMI connection drops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not page.ended.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0 or not self._ami.connected:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(_WATCH_SECONDS, remaining)):
                    await page.ended.wait()
        return True

    async def _settle(self, page: _Page) -> None:
        """After a failure: give the channels that exist a moment to report their end."""
        if page.channel is None and not page.legs:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SETTLE_SECONDS):
                await page.ended.wait()

    async def cancel(self, alarm_id: int, *, within: float = _SETTLE_SECONDS) -> bool:
        """Hang up the alarm's page in progress; return once its channels are gone.

        False when the alarm had no page in progress. Hanging up ``;1`` alone ends the
        page (Page()'s callees are end_marked); the device channels are hung up too, so a
        page stuck anywhere still ends.
        """
        page = self._inflight.get(alarm_id)
        if page is None:
            return False
        page.cancelled = True
        await self._hang_up(page)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await page.ended.wait()
        return True

    async def _hang_up(self, page: _Page) -> None:
        async def one(channel: str) -> None:
            try:
                await self._ami.hangup(channel)
            except AmiError as exc:
                logger.warning("cannot hang up %s: %s", channel, exc)

        await asyncio.gather(*(one(channel) for channel in page.live_channels))


def _page_of(event: Message) -> str | None:
    """The channel id of the page an event is of: its Linkedid, or for Page()'s
    asynchronous dials, which name the page only there, DestLinkedid (see the theory)."""
    return event.get("DestLinkedid" if event.event == "DialBegin" else "Linkedid")


def _one_line(text: str) -> str:
    """``text`` with control characters (CR, LF, NUL, tabs, ...) turned into spaces."""
    return "".join(" " if ord(char) < 32 or ord(char) == 127 else char for char in text)
