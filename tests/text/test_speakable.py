"""Control characters out of the text, and whether anything is left to say."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from voxserve.text import normalize_text
from voxserve.text.speakable import drop_control_characters, has_something_to_say


def test_every_format_character_is_removed():
    # The pattern lists the category's ranges; this keeps it complete as Unicode grows.
    formats = "".join(
        chr(code) for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) == "Cf"
    )
    assert drop_control_characters(f"a{formats}b") == "ab"


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("Hello\x00world.", "Hello world."),
        ("Hello\x07\x1b[31m there", "Hello  [31m there"),
        ("\u202eevil\u202c text", "evil text"),
        ("zero\u200bwidth", "zerowidth"),
        ("one\u2028two\u2029three\x85four", "one\ntwo\nthree\nfour"),
        ("tabs\tand\nlines\r\n stay", "tabs\tand\nlines\r\n stay"),
        ("Plain text.", "Plain text."),
    ],
)
def test_control_characters_are_dropped(written, kept):
    assert drop_control_characters(written) == kept


def test_normalization_drops_them_too():
    assert normalize_text("Hello\x00world\u202e.") == "Hello world."


@pytest.mark.parametrize("text", ["...", "!?", "\U0001f642\U0001f642", "\u0300\u0301.", " "])
def test_nothing_to_say(text):
    assert not has_something_to_say(text)


@pytest.mark.parametrize("text", ["a", "7", "\u00e9t\u00e9", "\u6f22"])
def test_something_to_say(text):
    assert has_something_to_say(text)
