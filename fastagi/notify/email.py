"""E-mail over SMTP (aiosmtplib): composing a message, and one attempt to send it.

Messages are built with :class:`email.message.EmailMessage` under the SMTP policy, which
encodes non-ASCII headers (RFC 2047) and refuses a header value with CR or LF; every
value that goes into a header has also passed :func:`~fastagi.notify.message.one_line`
or the address checks of the settings, so a department called "x\\r\\nBcc: ..." stays a
strange subject and never becomes a header.

Each attempt opens its own connection: notifications are rare, and a connection kept
open would be the one that a relay has silently dropped when the alarm comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import email.utils
import ssl
from dataclasses import dataclass
from datetime import datetime, tzinfo
from email.message import EmailMessage

import aiosmtplib

from fastagi.config.notify import SmtpSettings
from fastagi.notify.message import (
    Notice,
    Notification,
    Outcome,
    Redactor,
    body,
    one_line,
    sms_text,
    subject,
)

_POLICY = email.policy.SMTP


def compose(
    note: Notification,
    *,
    sender: str,
    recipient: str,
    zone: tzinfo | None,
    short: bool = False,
) -> EmailMessage:
    """The message to ``recipient``; ``short`` for an e-mail-to-SMS gateway (the SMS text
    as subject and body, since gateways send one or the other)."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = email.utils.format_datetime(note.at)
    message["Message-ID"] = email.utils.make_msgid(
        f"alarm-{note.alarm_id}-{note.kind}", domain=sender.rpartition("@")[2]
    )
    # RFC 3834: no auto-replies ("out of office") to the alarm address, please.
    message["Auto-Submitted"] = "auto-generated"
    if note.kind in ("activated", "escalated") and not note.drill:
        message["Importance"] = "high"
        message["X-Priority"] = "1"
    if short:
        text = sms_text(note, zone)
        message["Subject"] = text
        message.set_content(text + "\n", charset="utf-8", cte="quoted-printable")
    else:
        message["Subject"] = subject(note)
        message.set_content(body(note, zone), charset="utf-8", cte="quoted-printable")
    return message


def compose_notice(notice: Notice, *, sender: str, recipient: str) -> EmailMessage:
    """The message about the system itself (:class:`Notice`) to one administrator."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = email.utils.format_datetime(notice.at)
    message["Message-ID"] = email.utils.make_msgid(
        notice.kind.replace("_", "-"), domain=sender.rpartition("@")[2]
    )
    message["Auto-Submitted"] = "auto-generated"
    message["Subject"] = one_line(notice.subject)
    message.set_content(notice.text + "\n", charset="utf-8", cte="quoted-printable")
    return message


TEST_SUBJECT = "fastagi-panic test message (no alarm)"
TEST_TEXT = (
    "This is a test message from fastagi check --send-test: the alarm's e-mail reaches"
    " you. There is no alarm."
)


def compose_test(*, sender: str, recipient: str, at: datetime, short: bool = False) -> EmailMessage:
    """A message that says it is a test and that there is no alarm; ``short`` for an
    e-mail-to-SMS gateway (the text as subject and body, as :func:`compose` does)."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = email.utils.format_datetime(at)
    message["Message-ID"] = email.utils.make_msgid("check", domain=sender.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message["Subject"] = TEST_TEXT if short else TEST_SUBJECT
    message.set_content(TEST_TEXT + "\n", charset="utf-8", cte="quoted-printable")
    return message


@dataclass(frozen=True)
class Verification:
    """How far a conversation with the mail server got, sending nothing.

    ``step`` is the last step tried: ``connect`` (TCP, and TLS with security "tls"),
    ``starttls``, ``login``, or ``done`` when every step passed. ``detail`` has no secret.
    """

    ok: bool
    step: str
    detail: str


class SmtpChannel:
    """Sends one message per call to the configured server."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings
        password = settings.password.get_secret_value() if settings.password else ""
        self.redact = Redactor([password])
        self._tls: ssl.SSLContext | None = None

    @property
    def attempt_timeout(self) -> float:
        # aiosmtplib's timeout is per step (connect, TLS, EHLO, AUTH, MAIL, RCPT, DATA);
        # this bounds the whole conversation against a server that answers drop by drop.
        return self._settings.timeout * 4

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            cafile = str(self._settings.ca_file) if self._settings.ca_file else None
            self._tls = ssl.create_default_context(cafile=cafile)
        return self._tls

    async def verify(self) -> Verification:
        """Connect, EHLO, STARTTLS when the settings ask for it, and log in when they
        name a user; then QUIT. No message is sent: what an alarm's e-mail would meet
        before its MAIL FROM."""
        settings = self._settings
        where = f"{settings.host}:{settings.effective_port}"
        secure = settings.security != "none"
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.effective_port,
            use_tls=settings.security == "tls",
            # Never on its own: "none" must stay plain, "starttls" is done below.
            start_tls=False,
            tls_context=self._tls_context() if secure else None,
            timeout=settings.timeout,
        )
        step = "connect"
        done: list[str] = []
        try:
            await client.connect()
            done.append("TLS" if settings.security == "tls" else "connected")
            if settings.security == "starttls":
                step = "starttls"
                await client.ehlo()
                if not client.supports_extension("starttls"):
                    return Verification(
                        False, step, f"{where} does not offer STARTTLS (security = starttls)"
                    )
                await client.starttls()
                done.append("STARTTLS")
            if settings.username:
                step = "login"
                await client.login(settings.username, self._password())
                done.append(f"logged in as {settings.username}")
            step = "done"
            await client.quit()
        except aiosmtplib.SMTPResponseException as exc:
            return Verification(False, step, self.redact(f"{where}: {exc.code} {exc.message}"))
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            return Verification(False, step, self.redact(f"{where}: {_describe(exc)}"))
        finally:
            await _closed(client, settings.timeout)
        return Verification(True, step, f"{where}: {', '.join(done)}")

    def _password(self) -> str:
        password = self._settings.password
        return password.get_secret_value() if password else ""

    async def send(self, message: EmailMessage, recipient: str) -> Outcome:
        settings = self._settings
        secure = settings.security != "none"
        try:
            _refused, reply = await aiosmtplib.send(
                message,
                sender=settings.from_address,
                recipients=[recipient],
                hostname=settings.host,
                port=settings.effective_port,
                username=settings.username or None,
                password=settings.password.get_secret_value() if settings.password else None,
                use_tls=settings.security == "tls",
                # False, not None: with None aiosmtplib upgrades when offered, and "none"
                # would then depend on the server.
                start_tls=settings.security == "starttls",
                tls_context=self._tls_context() if secure else None,
                timeout=settings.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            answers = "; ".join(f"{item.code} {item.message}" for item in exc.recipients)
            transient = any(400 <= item.code < 500 for item in exc.recipients)
            return Outcome(False, self.redact(answers), retry=transient)
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx: try again later (greylisting, a full queue); 5xx: it will not work.
            return Outcome(
                False, self.redact(f"{exc.code} {exc.message}"), retry=not 500 <= exc.code < 600
            )
        except aiosmtplib.SMTPNotSupported as exc:
            # E.g. security = "starttls" and the server offers no STARTTLS.
            return Outcome(False, self.redact(f"not supported: {exc}"), retry=False)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Outcome(False, self.redact(_describe(exc)), retry=True)
        # aiosmtplib hands back the text of the reply to DATA, whose code is 250.
        return Outcome(True, self.redact(f"250 {reply}".strip()))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _closed(client: aiosmtplib.SMTP, limit: float) -> None:
    """Close ``client`` and wait, at most ``limit``, until its connection is gone.

    ``SMTP.close()`` only begins the end of a TLS connection: the TLS shutdown
    (close_notify) runs afterwards on the event loop, so a caller whose loop ends next
    (``fastagi check``) would leave the transport behind (a ResourceWarning on uvloop).
    aiosmtplib has no awaitable close; its protocol notes ``connection_lost``.
    """
    protocol = client.protocol
    client.close()
    if protocol is None:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            while not getattr(protocol, "_connection_lost", True):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
