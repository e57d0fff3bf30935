"""display_text (fastagi/flows/common.py): control characters become spaces, whatever
path the text takes (printable ASCII is returned as it is)."""

from __future__ import annotations

import unicodedata

import pytest

from fastagi.flows.common import display_text

REPLACED = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def one_by_one(text: str) -> str:
    return "".join(" " if unicodedata.category(char) in REPLACED else char for char in text)


def test_each_character_below_u0800_as_the_rule_says() -> None:
    texts = [f"PJSIP/1{chr(code)}0-00000001" for code in range(0x800)]

    assert [display_text(text) for text in texts] == [one_by_one(text) for text in texts]


@pytest.mark.parametrize(
    "text",
    ["PJSIP/142-0000012a", "", " ", "a\tb", "x\x7fy", "zero\u200bwidth", "line\u2028sep", "\ud800"],
)
def test_texts_as_the_rule_says(text: str) -> None:
    assert display_text(text) == one_by_one(text)
