"""The configuration's forms: what the administrator typed, kept to be shown again with
the refusal next to its field.

Nothing is validated here. A value is only read as the type the fastagi/admin function
takes (a whole number, or None for a blank optional field), as the CLI's argparse does;
the admin function checks it with the CLI's rules and refuses with a
:class:`~fastagi.store.StoreError` whose ``field`` names its argument, which is the
form field of the same name. A refusal that names no field of the form is shown above
it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from fastagi.store import StoreError

# A refusal's message is shown whole, but a value quoted in it is cut to this (a 10 kB
# paste quoted back in full helps nobody).
MAX_SHOWN = 300


@dataclass
class Form:
    """One form of a page: ``name`` tells it from the page's other forms (element ids);
    ``values`` what was typed (never a PIN: those are not kept); ``errors`` the refusal's
    message by field; ``message`` a refusal that names none of its fields."""

    name: str
    fields: tuple[str, ...]
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    message: str | None = None

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def refuse(self, exc: StoreError) -> None:
        text = str(exc)
        if len(text) > MAX_SHOWN:
            text = text[:MAX_SHOWN] + "…"
        if exc.field in self.fields:
            self.errors[exc.field] = text
        else:
            self.message = text

    @property
    def refused(self) -> bool:
        return bool(self.errors or self.message)


def empty(name: str, fields: Iterable[str], **values: str) -> Form:
    return Form(name, tuple(fields), values=dict(values))


async def posted(
    request: web.Request, name: str, fields: Iterable[str], *, secret: Iterable[str] = ()
) -> tuple[Form, dict[str, str]]:
    """The form as posted: the Form (without the ``secret`` fields' values, which are
    never sent back to the browser) and every field's text, secrets included."""
    data = await request.post()
    texts = {key: _text(data, key) for key in (*fields, *secret)}
    kept = {key: value for key, value in texts.items() if key not in set(secret)}
    return Form(name, (*fields, *secret), values=kept), texts


def _text(data: Mapping[str, object], key: str) -> str:
    value = data.get(key, "")
    # A file where a text was expected is no text.
    return value if isinstance(value, str) else ""


def whole_number(text: str, field_name: str, what: str) -> int:
    """The text as an int, or a refusal naming the field (what argparse's ``type=int``
    does for the CLI)."""
    stripped = text.strip()
    if not stripped.isascii() or not stripped.removeprefix("-").isdigit():
        raise StoreError(f"{what} must be a whole number", field=field_name)
    if len(stripped) > 18:  # the admin function says what the range is; int() would choke
        raise StoreError(f"{what} is far out of range", field=field_name)
    return int(stripped)


def optional_number(text: str, field_name: str, what: str) -> int | None:
    """None for a blank field (e.g. "use the default interval"), else :func:`whole_number`."""
    return None if not text.strip() else whole_number(text, field_name, what)
