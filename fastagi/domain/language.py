"""What the caller hears, per language: the prompt catalogue, and how discreetly the
trigger asks (the confirmation mode).

A catalogue is one TOML file per language (``fastagi/config/catalogues/<code>.toml``,
read by :mod:`fastagi.config.catalogues`); this module holds its shape and the rules,
with no I/O. English is complete by definition: a key a translation lacks falls back to
the English text, and :meth:`Catalogue.missing` names it so ``fastagi check`` can say so.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONFIRMATION_MODES",
    "DEFAULT_LANGUAGE",
    "FIELDS",
    "Catalogue",
    "CatalogueError",
    "Languages",
    "Speech",
    "is_language_code",
    "parse_catalogue",
]

#: The language every other falls back to, and the built-in sounds' language.
DEFAULT_LANGUAGE = "en"

#: How the trigger asks for a confirmation (issue 13): ``voice`` names the alarm,
#: ``neutral`` says nothing of one, ``tone`` beeps, ``display`` only shows a text, ``none``
#: raises the alarm at once.
CONFIRMATION_MODES = ("voice", "neutral", "tone", "display", "none")

#: Every text of a catalogue and the fields it may use. An empty text is allowed where
#: silence is a choice (the discreet acknowledgements).
FIELDS: Mapping[str, frozenset[str]] = {
    "question": frozenset({"department"}),
    "display": frozenset({"department"}),
    "unknown_label": frozenset({"extension"}),
    "activated": frozenset(),
    "cancelled": frozenset(),
    "neutral_question": frozenset(),
    "neutral_display": frozenset(),
    "neutral_activated": frozenset(),
    "neutral_cancelled": frozenset(),
    "not_authorised": frozenset(),
    "locked_out": frozenset(),
    "no_alarm": frozenset(),
    "pin_prompt": frozenset(),
    "pin_wrong": frozenset(),
    "wrong_pin_final": frozenset(),
    "menu_item": frozenset({"key", "department"}),
    "drill_label": frozenset({"department"}),
    "menu_all": frozenset({"key"}),
    "deactivated_one": frozenset({"department"}),
    "deactivated_all": frozenset(),
    "nothing_chosen": frozenset(),
    "unavailable": frozenset(),
    "drill_pin_prompt": frozenset(),
    "drill_pin_wrong": frozenset(),
    "drill_started": frozenset(),
    "drill_busy": frozenset(),
    "drill_not_available": frozenset(),
    "announcement": frozenset({"department", "extension"}),
    "all_clear": frozenset({"department", "extension"}),
    "drill_announcement": frozenset({"department", "extension"}),
}
#: Texts that may be empty: an empty acknowledgement is silence.
MAY_BE_EMPTY = frozenset({"neutral_activated", "neutral_cancelled"})


class CatalogueError(ValueError):
    """A catalogue file a translator broke: what and where, in one line."""


@dataclass(frozen=True)
class Catalogue:
    """One language's texts. ``digits`` are the words for 0..9, by which extensions are
    spoken digit by digit ("1 0 1" is "one zero one", "jeden zero jeden"), so the voice
    never reads "101" as a number in one language and as digits in another."""

    code: str
    name: str
    voice: str
    digits: tuple[str, ...]
    texts: Mapping[str, str]
    fallback: Catalogue | None = None  # English, for keys this one lacks

    def template(self, key: str) -> str:
        """The text of ``key`` with its fields unfilled; the English one when missing."""
        template = self.texts.get(key)
        if template is not None:
            return template
        if self.fallback is None:
            raise KeyError(f"no text {key!r} in the {self.code} catalogue")
        return self.fallback.template(key)

    def text(self, key: str, /, **values: str) -> str:
        """The text of ``key``, its fields filled in; the English one when missing
        (positional: the menu's texts have a field named ``key``)."""
        return self.template(key).format(**values)

    def missing(self) -> list[str]:
        """The keys this catalogue lacks, English's order (they are spoken in English)."""
        return [key for key in FIELDS if key not in self.texts]

    def spoken_extension(self, extension: str) -> str:
        """An extension digit by digit in this language; anything not a digit as is."""
        return " ".join(
            self.digits[int(char)] if char.isascii() and char.isdigit() else char
            for char in extension
        )


@dataclass(frozen=True)
class Speech:
    """What a department's page says and with which voice: the loop's whole need."""

    template: str
    voice: str | None  # None: the site's [tts] voice
    catalogue: Catalogue
    drill_template: str = ""

    def announcement(self, department: str, extension: str) -> str:
        """The page's text, the extension digit by digit in the language's words."""
        return self.template.format(
            department=department, extension=self.catalogue.spoken_extension(extension)
        )

    @property
    def drill_announcement_template(self) -> str:
        """The drill's page text, its fields unfilled: the site's or the catalogue's."""
        return self.drill_template or self.catalogue.template("drill_announcement")

    def drill_announcement(self, department: str) -> str:
        return self.drill_announcement_template.format(department=department, extension="")


@dataclass(frozen=True)
class Languages:
    """Every catalogue the server has, by code; English is always among them."""

    catalogues: Mapping[str, Catalogue]
    _order: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if DEFAULT_LANGUAGE not in self.catalogues:
            raise CatalogueError(f"no {DEFAULT_LANGUAGE} catalogue: every other falls back to it")
        object.__setattr__(self, "_order", tuple(sorted(self.catalogues)))

    @property
    def codes(self) -> tuple[str, ...]:
        return self._order

    def get(self, code: str | None) -> Catalogue:
        """The catalogue of ``code``; English for None or an unknown code (an alarm
        speaks English rather than nothing)."""
        return self.catalogues.get(code or DEFAULT_LANGUAGE) or self.catalogues[DEFAULT_LANGUAGE]

    def voice_for(self, code: str | None) -> str | None:
        """The voice to render ``code``'s texts with; None for English, whose voice is
        the site's ``[tts] voice`` (espeak-ng's default English when unset)."""
        catalogue = self.get(code)
        return None if catalogue.code == DEFAULT_LANGUAGE else catalogue.voice

    def speech(
        self, code: str | None, template: str | None = None, drill_template: str | None = None
    ) -> Speech:
        """What a page in ``code`` says and with which voice: the catalogue's
        announcements, or for English the site's own (``[alarm] announcement``,
        ``[drill] announcement``), which predate the catalogues and stay in force."""
        catalogue = self.get(code)
        english = catalogue.code == DEFAULT_LANGUAGE
        return Speech(
            template if english and template is not None else catalogue.template("announcement"),
            self.voice_for(code),
            catalogue,
            drill_template if english and drill_template is not None else "",
        )

    def missing(self) -> dict[str, list[str]]:
        """Per language, the keys that fall back to English (languages with none left out)."""
        return {code: gaps for code in self._order if (gaps := self.catalogues[code].missing())}


_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})?")


def is_language_code(code: str) -> bool:
    """A code like "en", "pl" or "pt-br": what a catalogue's file is named and the
    schema's CHECK accepts."""
    return _LANGUAGE_CODE.fullmatch(code) is not None


def _fields_of(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise CatalogueError(str(exc)) from None


def parse_catalogue(code: str, data: Mapping[str, Any], *, fallback: Catalogue | None) -> Catalogue:
    """A catalogue from a parsed TOML file: ``name``, ``voice``, ``digits`` (ten words)
    and ``[texts]``. Raises CatalogueError naming the key a translator broke: an unknown
    key, a field the text may not use, a text that is not one line."""

    def where(key: str) -> str:
        return f"catalogue {code}: {key}"

    name, voice, digits = data.get("name"), data.get("voice"), data.get("digits")
    if not isinstance(name, str) or not name:
        raise CatalogueError(f"{where('name')}: a language name is needed")
    if (
        not isinstance(voice, str)
        or not voice
        or not all(c.isalnum() or c in "-_+/." for c in voice)
    ):
        raise CatalogueError(f"{where('voice')}: an espeak-ng voice id is needed, like 'pl'")
    if not (
        isinstance(digits, list)
        and len(digits) == 10
        and all(isinstance(d, str) and d for d in digits)
    ):
        raise CatalogueError(f"{where('digits')}: the ten words for 0 to 9 are needed")
    texts = data.get("texts", {})
    if not isinstance(texts, dict):
        raise CatalogueError(f"{where('texts')}: must be a table")
    for key, text in texts.items():
        if key not in FIELDS:
            raise CatalogueError(f"{where(key)}: unknown text (known: {', '.join(FIELDS)})")
        if not isinstance(text, str) or any(char in text for char in "\r\n\0"):
            raise CatalogueError(f"{where(key)}: must be one line of text")
        if not text.strip() and key not in MAY_BE_EMPTY:
            raise CatalogueError(f"{where(key)}: may not be empty")
        unknown = _fields_of(text) - FIELDS[key]
        if unknown:
            allowed = ", ".join(f"{{{name}}}" for name in sorted(FIELDS[key])) or "none"
            raise CatalogueError(
                f"{where(key)}: {{{sorted(unknown)[0]}}} is not a field of this text"
                f" (allowed: {allowed})"
            )
    if fallback is None and set(FIELDS) - texts.keys():
        missing = ", ".join(key for key in FIELDS if key not in texts)
        raise CatalogueError(f"catalogue {code}: the fallback language lacks {missing}")
    return Catalogue(code, name, voice, tuple(digits), dict(texts), fallback)
