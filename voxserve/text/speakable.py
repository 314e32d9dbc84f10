"""What in a text can be spoken: control characters out, and whether anything is left to say.

Both hold whether the text is normalized or not: an engine is handed what a client wrote, and a
NUL or a bidi override in it made Piper's phonemizer fail the request (a 500) or say nothing.
"""

from __future__ import annotations

import re

# C0 and C1 controls but tab, newline and carriage return: a voice has nothing to say for them,
# and a NUL ends a C string in the middle of the text. Each becomes a space, since it may be all
# that separates two words ("Hello\x00world").
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Every format character (Unicode category Cf, checked against unicodedata by the tests): bidi
# overrides and isolates, zero-width characters, the soft hyphen, tags. Each sits inside a word
# or between them, never in place of a space, so it is removed.
_FORMAT = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)
_LINE_SEPARATOR = re.compile("[\u2028\u2029\x85]")


def drop_control_characters(text: str) -> str:
    """``text`` without control and format characters; Unicode line separators become ``\\n``."""
    if text.isascii() and text.isprintable():  # the usual case costs one scan
        return text
    text = _LINE_SEPARATOR.sub("\n", text)
    return _FORMAT.sub("", _CONTROL.sub(" ", text))


def has_something_to_say(text: str) -> bool:
    """Whether ``text`` holds a letter or a digit: without one ("...", "!?", an emoji) a voice
    has nothing to speak, and an engine given it makes no audio."""
    return any(character.isalnum() for character in text)
