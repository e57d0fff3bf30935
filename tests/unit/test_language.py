"""The prompt catalogues (fastagi/config/catalogues/*.toml, fastagi/domain/language.py):
complete in English and Polish, a missing text spoken in English and listed, and a file a
translator broke refused with the key that broke it."""

from __future__ import annotations

import string
import tomllib
from typing import Any

import pytest

from fastagi.config.catalogues import BUILT_IN, load_languages
from fastagi.domain.language import (
    FIELDS,
    CatalogueError,
    Languages,
    parse_catalogue,
)
from fastagi.flows import prompts

LANGUAGES = load_languages()
ENGLISH = LANGUAGES.get("en")
POLISH = LANGUAGES.get("pl")


def fields_of(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_english_and_polish_are_complete() -> None:
    assert LANGUAGES.codes == ("en", "pl")
    assert LANGUAGES.missing() == {}
    assert set(POLISH.texts) == set(FIELDS)
    assert (ENGLISH.voice, POLISH.voice) == ("en", "pl")


@pytest.mark.parametrize("key", sorted(FIELDS))
def test_polish_uses_the_fields_english_does(key: str) -> None:
    # A translation that drops {department} would name no department.
    assert fields_of(POLISH.template(key)) == fields_of(ENGLISH.template(key))


def test_the_flows_english_texts_are_the_catalogues() -> None:
    # Tests and tools prerender prompts.py's constants for what the flows say in
    # English: they must not drift from en.toml, which a translator copies.
    pairs = {
        "question": prompts.PANIC_QUESTION,
        "display": prompts.PANIC_DISPLAY,
        "unknown_label": prompts.UNKNOWN_LABEL,
        "activated": prompts.PANIC_ACTIVATED,
        "cancelled": prompts.PANIC_CANCELLED,
        "not_authorised": prompts.NOT_AUTHORISED,
        "locked_out": prompts.LOCKED_OUT,
        "no_alarm": prompts.NO_ALARM,
        "pin_prompt": prompts.PIN_PROMPT,
        "pin_wrong": prompts.PIN_WRONG,
        "wrong_pin_final": prompts.WRONG_PIN_FINAL,
        "menu_item": prompts.MENU_ITEM,
        "drill_label": prompts.DRILL_LABEL,
        "menu_all": prompts.MENU_ALL,
        "deactivated_one": prompts.DEACTIVATED_ONE,
        "deactivated_all": prompts.DEACTIVATED_ALL,
        "nothing_chosen": prompts.NOTHING_CHOSEN,
        "unavailable": prompts.UNAVAILABLE,
        "drill_pin_prompt": prompts.DRILL_PIN_PROMPT,
        "drill_pin_wrong": prompts.DRILL_PIN_WRONG,
        "drill_started": prompts.DRILL_STARTED,
        "drill_busy": prompts.DRILL_BUSY,
        "drill_not_available": prompts.DRILL_NOT_AVAILABLE,
    }
    assert {key: ENGLISH.template(key) for key in pairs} == pairs


def test_extensions_are_spoken_digit_by_digit_in_the_languages_words() -> None:
    assert ENGLISH.spoken_extension("105") == "one zero five"
    assert POLISH.spoken_extension("105") == "jeden zero pięć"
    # What is not a digit (a caller id from a trusted trunk) is left as it is.
    assert POLISH.spoken_extension("1a") == "jeden a"


def test_a_polish_page_names_the_department_and_extension_in_polish() -> None:
    speech = LANGUAGES.speech("pl", "Panic alarm. Department {department}. Extension {extension}.")
    assert speech.voice == "pl"
    assert speech.announcement("Oddział 3", "201") == (
        "Alarm napadowy. Dział Oddział 3. Numer wewnętrzny dwa zero jeden."
    )
    # English keeps the site's own [alarm] announcement, and the site's [tts] voice.
    english = LANGUAGES.speech("en", "Alarm! {department}, {extension}.")
    assert (english.announcement("ER", "12"), english.voice) == ("Alarm! ER, one two.", None)


def test_an_unknown_language_speaks_english() -> None:
    assert LANGUAGES.get("xx") is ENGLISH
    assert LANGUAGES.get(None) is ENGLISH
    assert LANGUAGES.voice_for("xx") is None


def polish_data(**changes: Any) -> dict[str, Any]:
    data = tomllib.loads((BUILT_IN / "pl.toml").read_text(encoding="utf-8"))
    texts = data["texts"]
    for key, value in changes.items():
        if value is None:
            del texts[key]
        else:
            texts[key] = value
    return data


def test_a_missing_text_falls_back_to_english_and_is_listed() -> None:
    partial = parse_catalogue("pl", polish_data(activated=None, menu_all=None), fallback=ENGLISH)
    assert partial.text("activated") == "Alarm activated."
    assert partial.text("cancelled") == "Alarm anulowany."
    languages = Languages({"en": ENGLISH, "pl": partial})
    assert languages.missing() == {"pl": ["activated", "menu_all"]}


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"question": "Alarm {dept}."}, "catalogue pl: question: {dept} is not a field"),
        ({"activated": "Alarm {department}."}, "activated: {department} is not a field"),
        ({"qestion": "x"}, "catalogue pl: qestion: unknown text"),
        ({"activated": "line one\nline two"}, "activated: must be one line of text"),
        ({"activated": "   "}, "activated: may not be empty"),
        ({"question": "Alarm {department"}, "expected '}' before end of string"),
    ],
)
def test_a_broken_text_is_refused_naming_it(changes: dict[str, str], error: str) -> None:
    with pytest.raises(CatalogueError, match=error.replace("{", r"\{").replace("}", r"\}")):
        parse_catalogue("pl", polish_data(**changes), fallback=ENGLISH)


def test_the_voice_and_digits_are_required() -> None:
    data = polish_data()
    with pytest.raises(CatalogueError, match="the ten words for 0 to 9"):
        parse_catalogue("pl", {**data, "digits": data["digits"][:9]}, fallback=ENGLISH)
    with pytest.raises(CatalogueError, match="an espeak-ng voice id"):
        parse_catalogue("pl", {**data, "voice": "pl; rm -rf"}, fallback=ENGLISH)


def test_english_must_be_complete() -> None:
    data = tomllib.loads((BUILT_IN / "en.toml").read_text(encoding="utf-8"))
    del data["texts"]["announcement"]
    with pytest.raises(CatalogueError, match="the fallback language lacks announcement"):
        parse_catalogue("en", data, fallback=None)


def test_a_sites_catalogue_replaces_a_built_in_one(tmp_path: Any) -> None:
    text = (BUILT_IN / "pl.toml").read_text(encoding="utf-8")
    (tmp_path / "pl.toml").write_text(
        text.replace('activated = "Alarm włączony."', 'activated = "Przyjęto."'), "utf-8"
    )
    (tmp_path / "Polish.toml").write_text(text, "utf-8")
    with pytest.raises(CatalogueError, match="must be a language code"):
        load_languages(tmp_path)
    (tmp_path / "Polish.toml").unlink()
    assert load_languages(tmp_path).get("pl").text("activated") == "Przyjęto."
