"""Prompts from Asterisk's built-in sounds, for when text-to-speech fails.

Every name below is in asterisk-core-sounds-en (any format; Debian ships the .gsm set as
en_US_f_Allison) and checked against its transcript, core-sounds-en.txt:

    ascending-2tone    [ascending tones]
    vm-Urgent          "urgent"
    extension          "Extension."
    if-correct-press   "If this is correct, press..."
    digits/N           "zero" .. "nine";  digits/star, digits/pound
    letters/x          "a" .. "z";  letters/dash, letters/dot, letters/plus, ...

There is no "alarm", "emergency" or "department" in the core set, so the fallback says
"urgent" and names the extension, spelled out; the department is left to the caller's eyes
(the phone display) when TTS is down.
"""

from __future__ import annotations

# Characters of an extension (or a SIP user name) that the core sounds can say. Anything
# else is skipped: the sequence must be names Asterisk has, never text from the caller.
_CHARACTER_SOUNDS: dict[str, str] = {
    **{digit: f"digits/{digit}" for digit in "0123456789"},
    **{letter: f"letters/{letter}" for letter in "abcdefghijklmnopqrstuvwxyz"},
    "*": "digits/star",
    "#": "digits/pound",
    "-": "letters/dash",
    ".": "letters/dot",
    "+": "letters/plus",
    "@": "letters/at",
    "/": "letters/slash",
    "_": "letters/ascii95",
}
# An extension is a handful of characters; a longer string is not worth paging out loud.
MAX_SPELLED = 20


def spell(characters: str) -> list[str]:
    """The sounds that spell ``characters``, e.g. "201" -> digits/2, digits/0, digits/1."""
    return [
        _CHARACTER_SOUNDS[char]
        for char in characters.lower()[:MAX_SPELLED]
        if char in _CHARACTER_SOUNDS
    ]


def fallback_announcement(extension: str) -> list[str]:
    """The page announcement, "<tones> Urgent. Extension 2 0 1.", in built-in sounds."""
    return ["ascending-2tone", "vm-Urgent", "extension", *spell(extension)]


def fallback_drill_announcement() -> list[str]:
    """A drill's page, "<beep> T. E. S. T.", in built-in sounds: the core set has no
    "test" (nor "drill"), and a drill must never sound like an alarm ("urgent")."""
    return ["beep", *spell("test")]


def fallback_confirmation() -> list[str]:
    """The trigger's question, "Urgent. If this is correct, press 1.", in built-in sounds."""
    return ["vm-Urgent", "if-correct-press", "digits/1"]
