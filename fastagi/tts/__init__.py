"""Text-to-speech prompts: rendered with pyttsx3/espeak-ng off the event loop, cached on disk
in Asterisk's signed-linear format, with built-in sounds to fall back on."""

from fastagi.config.tts import TtsSettings
from fastagi.tts.cache import Prompt, TextToSpeech
from fastagi.tts.fallback import (
    fallback_announcement,
    fallback_confirmation,
    fallback_drill_announcement,
    spell,
)
from fastagi.tts.render import FORMAT_VERSION, TtsError, spoken_text

__all__ = [
    "FORMAT_VERSION",
    "Prompt",
    "TextToSpeech",
    "TtsError",
    "TtsSettings",
    "fallback_announcement",
    "fallback_confirmation",
    "fallback_drill_announcement",
    "spell",
    "spoken_text",
]
