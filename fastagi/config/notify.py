"""Settings of the notifiers (e-mail, SMS webhook, e-mail-to-SMS), wired into the one
Settings class as ``notify``.

Every value that ends up in a mail header or an HTTP request line is checked here, once,
so that no configuration can inject a header: addresses must be plain addr-specs, header
names HTTP tokens, and nothing may hold CR, LF or NUL. Secrets (the SMTP password, the
webhook URL, which often carries an API key, and the webhook's header values, e.g. an
``Authorization``) are ``SecretStr``: they print as ``**********``.
"""

from __future__ import annotations

import re
import string
import zoneinfo
from email.headerregistry import Address
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from fastagi.config.checks import one_line
from fastagi.domain.events import NOTIFY_KINDS as KINDS
from fastagi.domain.events import NotifyKind

# What a webhook body, its URL, and the e-mail-to-SMS address may refer to.
TEMPLATE_VARIABLES = frozenset(
    {"alarm_id", "department", "extension", "event", "time", "time_utc", "by", "to", "text"}
)
# RFC 9110 token: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# What we accept as a phone number, after dropping the usual separators.
_PHONE = re.compile(r"\+?[0-9]{3,20}")
_PHONE_SEPARATORS = re.compile(r"[\s().\-/]")


def check_address(value: str) -> str:
    """A plain ASCII addr-spec (``user@example.org``), nothing that could end a header."""
    one_line(value, "an e-mail address")
    if not value.isascii():
        raise ValueError(f"only ASCII e-mail addresses are supported: {value!r}")
    try:
        address = Address(addr_spec=value)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"not an e-mail address: {value!r} ({exc})") from None
    if not address.username or not address.domain or address.addr_spec != value:
        raise ValueError(f"not a plain e-mail address like user@example.org: {value!r}")
    return value


def check_phone(value: str) -> str:
    """A phone number, normalised to digits with an optional leading ``+``."""
    number = _PHONE_SEPARATORS.sub("", value)
    if not _PHONE.fullmatch(number):
        raise ValueError(f"not a phone number like +49 30 1234567: {value!r}")
    return number


def check_template(value: str, what: str) -> str:
    template = string.Template(value)
    if not template.is_valid():
        raise ValueError(f"{what} is not a valid template (a lone '$'? write '$$')")
    unknown = set(template.get_identifiers()) - TEMPLATE_VARIABLES
    if unknown:
        raise ValueError(
            f"{what} may use only ${', $'.join(sorted(TEMPLATE_VARIABLES))}; "
            f"not ${', $'.join(sorted(unknown))}"
        )
    return value


class SmtpSettings(BaseModel):
    """The mail server that takes our messages (a relay or the provider's submission)."""

    # A misspelt setting is an error at start-up, not a default silently used.
    model_config = ConfigDict(extra="forbid")

    # Empty: no e-mail at all (and no e-mail-to-SMS).
    host: str = ""
    # None: the usual port of ``security`` (25, 587 or 465).
    port: int | None = Field(default=None, ge=1, le=65535)
    # "starttls" upgrades a plain connection and refuses to go on without TLS; "tls" is
    # TLS from the first byte (port 465); "none" is for a relay on the PBX's own network.
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = "fastagi-panic@localhost"
    # A PEM bundle to verify the server's certificate with, for a relay whose certificate
    # a private CA issued; None uses the system's trust store.
    ca_file: Path | None = None
    # Per attempt: connecting, the TLS handshake and each command.
    timeout: float = Field(default=15.0, gt=0, le=300)

    @field_validator("host", "username")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        return None if value is None else one_line(value, "this value")

    @field_validator("from_address")
    @classmethod
    def _from(cls, value: str) -> str:
        return check_address(value)

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"none": 25, "starttls": 587, "tls": 465}[self.security]


class WebhookSettings(BaseModel):
    """An HTTP request per SMS, for the SMS gateways that take one (most do).

    ``url`` and ``body`` are :class:`string.Template` texts (``$to``, ``$text``, ``$alarm_id``,
    ``$department``, ``$extension``, ``$event``, ``$time``, ``$time_utc``, ``$by``). Values
    are percent-encoded in the URL, JSON-escaped in a JSON body, form-encoded in a form body
    and left as they are in any other body. Examples: a JSON API,
    ``body = '{"to": "$to", "message": "$text"}'``; Kannel,
    ``method = "GET"``, ``url = "http://kannel:13013/cgi-bin/sendsms?username=u&password=p&to=$to&text=$text"``.
    """

    model_config = ConfigDict(extra="forbid")

    # None: no SMS by webhook. Secret, because gateways often take the key in the URL.
    url: SecretStr | None = None
    method: Literal["POST", "PUT", "PATCH", "GET"] = "POST"
    # Every value is secret (an Authorization or API-key header is the usual case).
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    content_type: str = "application/json"
    body: str = '{"to": "$to", "text": "$text"}'
    timeout: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = one_line(value.get_secret_value(), "the webhook URL")
        # The error names neither the URL nor its parts: they may hold the key.
        if urlsplit(text).scheme not in ("http", "https") or not urlsplit(text).hostname:
            raise ValueError("the webhook URL must be an http:// or https:// URL with a host")
        check_template(text, "the webhook URL")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"not an HTTP header name: {name!r}")
            if name.lower() in ("content-type", "content-length", "host"):
                raise ValueError(f"header {name} is set by the notifier (see content_type)")
            one_line(secret.get_secret_value(), f"header {name}")
        return value

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        return one_line(value, "content_type")

    @field_validator("body")
    @classmethod
    def _body(cls, value: str) -> str:
        return check_template(value, "the webhook body")

    @property
    def body_encoding(self) -> Literal["json", "form", "raw"]:
        media = self.content_type.split(";", 1)[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            return "json"
        if media == "application/x-www-form-urlencoded":
            return "form"
        return "raw"


class RetrySettings(BaseModel):
    """Each delivery is tried up to ``attempts`` times; the n-th wait is
    ``min(max_backoff, initial_backoff * 2**(n-1))``, randomised down to half of it so that
    many deliveries to one server do not retry in step."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(default=8, ge=1, le=100)
    initial_backoff: float = Field(default=2.0, gt=0, le=3600)
    max_backoff: float = Field(default=120.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _order(self) -> RetrySettings:
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff must not be less than initial_backoff")
        return self


class Recipients(BaseModel):
    """A department's recipients; a list left out (None) falls back to the default one,
    an empty list means nobody."""

    model_config = ConfigDict(extra="forbid")

    emails: list[str] | None = None
    sms: list[str] | None = None

    @field_validator("emails")
    @classmethod
    def _emails(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [check_address(item) for item in value]

    @field_validator("sms")
    @classmethod
    def _sms(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [check_phone(item) for item in value]


class NotifySettings(BaseModel):
    """Who is told about alarms, and how (``[notify]``)."""

    model_config = ConfigDict(extra="forbid")

    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    # The default recipients, for every department without a list of its own.
    emails: list[str] = Field(default_factory=list)
    sms: list[str] = Field(default_factory=list)
    # Who is told when the system itself is degraded (a scheduled check keeps failing)
    # and when it recovers: the administrators, not the alarm's recipients.
    admin_emails: list[str] = Field(default_factory=list)
    # SMS by e-mail instead of (or beside) the webhook: a template of the address, e.g.
    # "$to@sms.example.net". None: SMS numbers go to the webhook only.
    email_sms_address: str | None = None
    # Per department name (as in the departments table; case is ignored).
    departments: dict[str, Recipients] = Field(default_factory=dict)
    # Which events are sent; "escalated" is for the caller's own use.
    events: list[NotifyKind] = Field(default_factory=lambda: list(KINDS))
    # The time zone of the "local" times in messages (an IANA name such as
    # "Europe/Berlin"); None is the server's own.
    timezone: str | None = None
    # Deliveries waiting or retrying at once; beyond this new ones are dropped (and the
    # drop is recorded), so a dead mail server cannot make memory grow without end.
    max_pending: int = Field(default=1000, ge=1, le=100_000)
    # Deliveries in progress at once (connections open to the servers).
    max_concurrent: int = Field(default=8, ge=1, le=256)

    @field_validator("emails", "admin_emails")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        return [check_address(item) for item in value]

    @field_validator("sms")
    @classmethod
    def _sms(cls, value: list[str]) -> list[str]:
        return [check_phone(item) for item in value]

    @field_validator("email_sms_address")
    @classmethod
    def _email_sms(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_template(value, "email_sms_address")
        if "to" not in string.Template(value).get_identifiers():
            raise ValueError("email_sms_address must contain $to, e.g. $to@sms.example.net")
        check_address(string.Template(value).safe_substitute(to="491701234567"))
        return value

    @field_validator("departments")
    @classmethod
    def _departments(cls, value: dict[str, Recipients]) -> dict[str, Recipients]:
        folded = [name.casefold() for name in value]
        if len(set(folded)) != len(folded):
            raise ValueError("department names differ only in case")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone: {value!r}") from None
        return value

    def recipients_for(self, department: str) -> tuple[list[str], list[str]]:
        """The e-mail addresses and phone numbers for an alarm of ``department``."""
        wanted = department.casefold()
        own = next(
            (item for name, item in self.departments.items() if name.casefold() == wanted),
            None,
        )
        emails = own.emails if own is not None and own.emails is not None else self.emails
        sms = own.sms if own is not None and own.sms is not None else self.sms
        return list(emails), list(sms)
