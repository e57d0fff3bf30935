"""The notifier: queues deliveries at once and sends them in the background.

Theory of operation. :meth:`Notifier.notify` turns one alarm event into deliveries, one
per channel and recipient (an e-mail to each address, an SMS to each number by webhook
and/or e-mail-to-SMS), appends each to the *lane* of its (channel, recipient) and
returns: it never waits for the network, so a dead mail server cannot delay paging.

A lane is a FIFO served by one task, which exists while the lane has work. Lanes keep
the order per recipient (an "alarm ended" never arrives before its "panic alarm" that
was still being retried) and keep recipients apart: an SMTP server in backoff holds up
e-mail lanes only, never the SMS webhook. ``max_concurrent`` bounds the attempts in
progress at once; ``max_pending`` bounds the deliveries queued or retrying, beyond which
new ones are dropped, and the drop recorded, rather than let memory grow.

A failed attempt that is worth repeating (a 4xx SMTP reply, HTTP 5xx/429, no connection)
is retried after an exponential backoff with jitter, up to ``retry.attempts``. Every
attempt is recorded as a history event (``notification_sent`` or ``notification_failed``)
through the injected ``record``, with the channel, recipient, attempt, outcome and the
remote's answer, secrets removed.

:meth:`Notifier.close` refuses new work, cuts every backoff short so each waiting
delivery gets one last attempt, waits up to ``drain_timeout`` and cancels the rest,
recording each delivery it gives up as ``abandoned``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import string
import zoneinfo
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from email.message import EmailMessage
from typing import Any, Literal

from fastagi.config.notify import NotifySettings
from fastagi.domain.events import EventKind, HistoryEvent, NotifyKind
from fastagi.notify.email import SmtpChannel, compose, compose_notice
from fastagi.notify.message import Notice, Notification, Outcome, template_values
from fastagi.notify.webhook import WebhookChannel

logger = logging.getLogger(__name__)

Channel = Literal["email", "webhook", "email-sms"]
Record = Callable[[HistoryEvent], Awaitable[None]]
# How long close() may spend recording the deliveries it abandons.
_ABANDON_RECORD_TIMEOUT = 5.0


@dataclass
class _Delivery:
    note: Notification | Notice
    channel: Channel
    recipient: str
    attempt_timeout: float
    send: Callable[[], Awaitable[Outcome]]
    finished: bool = False  # the last attempt is made; only its record may be pending


@dataclass
class _Lane:
    queue: collections.deque[_Delivery] = field(default_factory=collections.deque)
    current: _Delivery | None = None
    task: asyncio.Task[None] | None = None


class Notifier:
    def __init__(
        self,
        settings: NotifySettings,
        record: Record,
        *,
        rng: random.Random | None = None,
    ) -> None:
        """``record`` appends a history event (``AlarmService.record``); it is awaited in
        the background and its errors are logged, never raised."""
        self._settings = settings
        self._record_event = record
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._zone: tzinfo | None = (
            zoneinfo.ZoneInfo(settings.timezone) if settings.timezone else None
        )
        self._smtp = SmtpChannel(settings.smtp) if settings.smtp.host else None
        self._webhook = WebhookChannel(settings.webhook) if settings.webhook.url else None
        self._lanes: dict[tuple[Channel, str], _Lane] = {}
        self._pending = 0
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self._closing = asyncio.Event()
        self._closed = False
        self._side_tasks: set[asyncio.Task[None]] = set()
        # Deliveries given up (failed for good, dropped, abandoned) and sent, per channel,
        # since start: read by the metrics (fastagi/metrics) when scraped.
        self.failures: collections.Counter[Channel] = collections.Counter()
        self.sent: collections.Counter[Channel] = collections.Counter()
        if not self._smtp and (settings.emails or settings.email_sms_address):
            logger.warning("notify: e-mail recipients are configured but no SMTP host")
        if settings.sms and not self._webhook and not settings.email_sms_address:
            logger.warning("notify: SMS numbers are configured but no webhook or e-mail-to-SMS")

    # -- the API -----------------------------------------------------------------------

    async def notify(
        self,
        kind: NotifyKind,
        *,
        alarm_id: int,
        department: str,
        extension: str,
        activated_at: datetime,
        at: datetime | None = None,
        by: str | None = None,
        reason: str | None = None,
        drill: bool = False,
    ) -> int:
        """Queue the deliveries of one alarm event and return at once: how many were
        queued. Never raises (a notification must not break the alarm). ``drill``: the
        alarm is a drill; every message says [TEST]."""
        try:
            note = Notification(
                kind=kind,
                alarm_id=alarm_id,
                department=department,
                extension=extension,
                activated_at=activated_at,
                at=at or (activated_at if kind == "activated" else datetime.now(UTC)),
                by=by,
                reason=reason,
                drill=drill,
            )
            return self.submit(note)
        except Exception:
            logger.exception("notify: cannot queue the %s notification of alarm %s", kind, alarm_id)
            return 0

    def submit(self, note: Notification) -> int:
        """:meth:`notify` for a ready :class:`Notification` (no await needed)."""
        if self._closed:
            logger.warning("notify: closed; %s of alarm %d not sent", note.kind, note.alarm_id)
            return 0
        if note.kind not in self._settings.events:
            return 0
        queued = 0
        for delivery in self._deliveries(note):
            if self._pending >= self._settings.max_pending:
                logger.error(
                    "notify: %d deliveries pending; dropped %s to %s",
                    self._pending,
                    delivery.channel,
                    delivery.recipient,
                )
                self._spawn(self._record(delivery, 0, Outcome(False, "queue full"), "dropped"))
                continue
            self._enqueue(delivery)
            queued += 1
        return queued

    def submit_notice(self, notice: Notice) -> int:
        """Queue an e-mail about the system itself to each of ``admin_emails``; how many
        were queued. Retried and recorded like an alarm's, without an alarm."""
        if self._closed:
            logger.warning("notify: closed; %s not sent", notice.kind)
            return 0
        if self._smtp is None:
            if self._settings.admin_emails:
                logger.error("notify: %s not e-mailed: no [notify.smtp] host", notice.kind)
            return 0
        queued = 0
        for address in self._settings.admin_emails:
            message = compose_notice(
                notice, sender=self._settings.smtp.from_address, recipient=address
            )
            if self._pending >= self._settings.max_pending:
                logger.error("notify: %d deliveries pending; dropped %s", self._pending, address)
                continue
            self._enqueue(
                _Delivery(
                    notice,
                    "email",
                    address,
                    self._smtp.attempt_timeout,
                    _bind_email(self._smtp, message, address),
                )
            )
            queued += 1
        return queued

    @property
    def pending(self) -> int:
        """Deliveries queued, in progress or waiting to retry."""
        return self._pending

    async def close(self, drain_timeout: float = 10.0) -> None:
        """Stop taking notifications; give what is pending up to ``drain_timeout`` seconds
        (one more attempt each, no more backoff), then cancel and record the rest."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        lanes = [lane for lane in self._lanes.values() if lane.task is not None]
        tasks = [lane.task for lane in lanes if lane.task is not None]
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=drain_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        abandoned = [
            delivery
            for lane in lanes
            for delivery in ([lane.current] if lane.current else []) + list(lane.queue)
            if not delivery.finished
        ]
        self._lanes.clear()
        if abandoned:
            logger.error("notify: %d deliveries abandoned at shutdown", len(abandoned))
            outcome = Outcome(False, "shutting down")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_ABANDON_RECORD_TIMEOUT):
                    for delivery in abandoned:
                        await self._record(delivery, 0, outcome, "abandoned")
        if self._side_tasks:
            await asyncio.wait(list(self._side_tasks), timeout=_ABANDON_RECORD_TIMEOUT)
        if self._webhook is not None:
            await self._webhook.aclose()

    # -- deliveries --------------------------------------------------------------------

    def _deliveries(self, note: Notification) -> list[_Delivery]:
        settings = self._settings
        emails, numbers = settings.recipients_for(note.department)
        found: list[_Delivery] = []
        smtp, webhook = self._smtp, self._webhook
        if smtp is not None:
            sender = settings.smtp.from_address
            for address in emails:
                message = compose(note, sender=sender, recipient=address, zone=self._zone)
                found.append(
                    _Delivery(
                        note,
                        "email",
                        address,
                        smtp.attempt_timeout,
                        _bind_email(smtp, message, address),
                    )
                )
            if settings.email_sms_address:
                pattern = string.Template(settings.email_sms_address)
                for number in numbers:
                    address = pattern.substitute(to=number.lstrip("+"))
                    message = compose(
                        note, sender=sender, recipient=address, zone=self._zone, short=True
                    )
                    found.append(
                        _Delivery(
                            note,
                            "email-sms",
                            address,
                            smtp.attempt_timeout,
                            _bind_email(smtp, message, address),
                        )
                    )
        if webhook is not None:
            values = template_values(note, self._zone)
            for number in numbers:
                found.append(
                    _Delivery(
                        note,
                        "webhook",
                        number,
                        webhook.attempt_timeout,
                        _bind_webhook(webhook, {**values, "to": number}),
                    )
                )
        return found

    def _enqueue(self, delivery: _Delivery) -> None:
        key = (delivery.channel, delivery.recipient)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.queue.append(delivery)
        self._pending += 1
        if lane.task is None:
            lane.task = asyncio.create_task(
                self._serve(key, lane), name=f"notify-{delivery.channel}"
            )

    async def _serve(self, key: tuple[Channel, str], lane: _Lane) -> None:
        try:
            while lane.queue:
                lane.current = lane.queue.popleft()
                try:
                    await self._deliver(lane.current)
                except Exception:  # a bug here must not silence the rest of the lane
                    logger.exception("notify: delivery to %s failed unexpectedly", key[1])
                lane.current = None
                self._pending -= 1
        finally:
            # Done, or cancelled by close(), which then reads what is left in the lane.
            lane.task = None
            if lane.current is None and not lane.queue and self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _deliver(self, delivery: _Delivery) -> None:
        attempts = self._settings.retry.attempts
        for attempt in range(1, attempts + 1):
            async with self._slots:
                try:
                    async with asyncio.timeout(delivery.attempt_timeout):
                        outcome = await delivery.send()
                except TimeoutError:
                    outcome = Outcome(False, "no answer in time", retry=True)
                except Exception as exc:
                    # A bug, not the remote: its text may hold anything, so only its type
                    # goes to the history; the log has the traceback.
                    logger.exception(
                        "notify: %s to %s raised", delivery.channel, delivery.recipient
                    )
                    outcome = Outcome(False, f"internal error: {type(exc).__name__}", retry=True)
            last = outcome.ok or not outcome.retry or attempt == attempts or self._closing.is_set()
            label = "sent" if outcome.ok else ("failed" if last else "retrying")
            delivery.finished = last
            await self._record(delivery, attempt, outcome, label)
            if last:
                return
            await self._backoff(attempt)

    async def _backoff(self, attempt: int) -> None:
        retry = self._settings.retry
        delay = min(retry.max_backoff, retry.initial_backoff * 2 ** (attempt - 1))
        delay = self._rng.uniform(delay / 2, delay)
        # close() ends the wait: one more attempt, now, instead of none at all.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()

    # -- history -----------------------------------------------------------------------

    async def _record(
        self, delivery: _Delivery, attempt: int, outcome: Outcome, label: str
    ) -> None:
        note = delivery.note
        if outcome.ok:
            self.sent[delivery.channel] += 1
        elif label != "retrying":
            self.failures[delivery.channel] += 1
        level = (
            logging.INFO
            if outcome.ok
            else (logging.WARNING if label == "retrying" else logging.ERROR)
        )
        if isinstance(note, Notice):
            about = note.kind
            alarm_id, extension, department = None, None, None
        else:
            about = f"{note.kind} of alarm {note.alarm_id}"
            alarm_id, extension, department = note.alarm_id, note.extension, note.department
        logger.log(
            level,
            "notify: %s by %s to %s: %s (attempt %d/%d): %s",
            about,
            delivery.channel,
            delivery.recipient,
            label,
            attempt,
            self._settings.retry.attempts,
            outcome.answer,
        )
        event = HistoryEvent(
            EventKind.NOTIFICATION_SENT if outcome.ok else EventKind.NOTIFICATION_FAILED,
            alarm_id,
            extension,
            department,
            {
                "event": note.kind,
                "channel": delivery.channel,
                "recipient": delivery.recipient,
                "attempt": attempt,
                "attempts": self._settings.retry.attempts,
                "outcome": label,
                "answer": outcome.answer,
            },
        )
        try:
            await self._record_event(event)
        except Exception:
            logger.exception("notify: cannot record the %s event", event.kind)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine, name="notify-record")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)


def _bind_email(
    channel: SmtpChannel, message: EmailMessage, address: str
) -> Callable[[], Awaitable[Outcome]]:
    def send() -> Awaitable[Outcome]:
        return channel.send(message, address)

    return send


def _bind_webhook(
    channel: WebhookChannel, values: dict[str, str]
) -> Callable[[], Awaitable[Outcome]]:
    def send() -> Awaitable[Outcome]:
        return channel.send(values)

    return send
