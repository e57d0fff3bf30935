"""SMS through an HTTP webhook (httpx): rendering the request, and one attempt to send it.

The URL and the body are :class:`string.Template` texts; each value is escaped for where
it lands (percent-encoding in the URL, JSON string escaping in a JSON body, form encoding
in a form body), so a department called ``"}, "to": "+1900...`` cannot change the request.
The URL and the header values are secrets: they never reach a log, an exception text we
produce or the history, and the remote's answer is scrubbed of them too.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit, urlunsplit

import httpx

from fastagi.config.notify import WebhookSettings
from fastagi.notify.message import Outcome, Redactor

# Of the remote's answer we keep the status and the start of the body (the gateway's
# message id or error); reading stops here, whatever the gateway sends.
ANSWER_CHARS = 200
_READ_LIMIT = 4096
# Statuses worth another attempt: the gateway is down, overloaded or asks us to wait.
_TRANSIENT = frozenset({408, 425, 429})


def quiet_http_loggers() -> None:
    """httpx logs each request's full URL at INFO (httpcore more at DEBUG); our URL holds
    secrets. Unless an administrator has set their levels, they log warnings only."""
    for name in ("httpx", "httpcore"):
        http_logger = logging.getLogger(name)
        if http_logger.level == logging.NOTSET:
            http_logger.setLevel(logging.WARNING)


def render_url(template: str, values: Mapping[str, str]) -> str:
    return string.Template(template).substitute({k: quote(v, safe="") for k, v in values.items()})


def render_body(template: str, values: Mapping[str, str], encoding: str) -> str:
    if encoding == "json":
        # The text between the quotes of a JSON string: json.dumps escapes quotes,
        # backslashes and control characters.
        escaped = {k: json.dumps(v, ensure_ascii=False)[1:-1] for k, v in values.items()}
    elif encoding == "form":
        escaped = {k: quote_plus(v) for k, v in values.items()}
    else:
        escaped = dict(values)
    return string.Template(template).substitute(escaped)


def _url_secrets(url: str) -> list[str]:
    """The parts of a URL that may be credentials: the whole, the password, the query
    values (without placeholders), the path segments after the host."""
    parts = urlsplit(url)
    found = [url]
    if parts.password:
        found.append(parts.password)
    found += [value for _, value in parse_qsl(parts.query) if "$" not in value]
    # Some gateways put the key in the path (https://hooks.example/T0/B0/XXXX).
    found += [segment for segment in parts.path.split("/") if len(segment) >= 16]
    return found


@dataclass(frozen=True)
class Probe:
    """What the gateway answered to HEAD: its status, or None when nothing answered."""

    status: int | None
    answer: str  # no secret in it


class WebhookChannel:
    """Sends one HTTP request per call, through one client kept for the notifier's life."""

    def __init__(self, settings: WebhookSettings, client: httpx.AsyncClient | None = None) -> None:
        if settings.url is None:
            raise ValueError("no webhook URL configured")
        quiet_http_loggers()
        self._settings = settings
        self._url = settings.url.get_secret_value()
        self._headers = {
            name: secret.get_secret_value() for name, secret in settings.headers.items()
        }
        if settings.method != "GET":
            self._headers["Content-Type"] = settings.content_type
        self.redact = Redactor([*_url_secrets(self._url), *self._headers.values()])
        self._client = client
        self._own_client = client is None

    @property
    def attempt_timeout(self) -> float:
        # httpx's timeout is per phase (connect, write, read); this bounds the whole.
        return self._settings.timeout * 3

    @property
    def target(self) -> str:
        """What logs may say about the webhook: its scheme and host, no path or query."""
        parts = urlsplit(self._url)
        return f"{parts.scheme}://{parts.hostname}"

    def render(self, values: Mapping[str, str]) -> tuple[str, bytes | None]:
        url = render_url(self._url, values)
        if self._settings.method == "GET":
            return url, None
        text = render_body(self._settings.body, values, self._settings.body_encoding)
        return url, text.encode("utf-8")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._settings.timeout, follow_redirects=False)
        return self._client

    async def send(self, values: Mapping[str, str]) -> Outcome:
        url, content = self.render(values)
        redact = self.redact.with_more([url])
        try:
            async with self._http().stream(
                self._settings.method, url, headers=self._headers, content=content
            ) as response:
                received = bytearray()
                async for chunk in response.aiter_bytes():
                    received += chunk
                    if len(received) >= _READ_LIMIT:
                        break
        except httpx.HTTPError as exc:
            # The exception's text may hold the URL (and so the key): redacted.
            return Outcome(False, redact(_describe(exc)), retry=True)
        except (OSError, TimeoutError) as exc:
            return Outcome(False, redact(_describe(exc)), retry=True)
        text = _decode(bytes(received), response.charset_encoding)
        text = " ".join(text.split())[:ANSWER_CHARS]
        answer = redact(f"{response.status_code} {response.reason_phrase} {text}".strip())
        if response.is_success:
            return Outcome(True, answer)
        status = response.status_code
        return Outcome(False, answer, retry=status >= 500 or status in _TRANSIENT)

    async def probe(self) -> Probe:
        """A ``HEAD`` request to the webhook's URL without its query (where GET gateways
        take the number and the text) and without a templated path: whether the gateway
        answers, sending nothing (a 405 answers too: HEAD is not what it takes, but it is
        there)."""
        parts = urlsplit(self._url)
        path = parts.path if "$" not in parts.path else "/"
        url = urlunsplit(parts._replace(path=path or "/", query="", fragment=""))
        try:
            response = await self._http().head(url, headers=self._auth_headers())
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            return Probe(None, self.redact(_describe(exc)))
        answer = self.redact(f"HTTP {response.status_code} {response.reason_phrase}".strip())
        return Probe(response.status_code, answer)

    def _auth_headers(self) -> dict[str, str]:
        # The configured headers (an API key) without the body's Content-Type.
        return {k: v for k, v in self._headers.items() if k != "Content-Type"}

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None


def _decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
