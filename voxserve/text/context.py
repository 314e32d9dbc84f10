"""Looking around a match: small helpers shared by the rewriting steps of normalization."""

from __future__ import annotations

import re

_SPACES = re.compile(r"[ \t]*")


def full_stop_if_sentence_ends(text: str, position: int) -> str:
    """``"."`` if a sentence plausibly ends at ``position`` (only spaces follow before the end of
    the text, a line break or a capital letter), else ``""``.

    Used where an abbreviation's own period is dropped ("etc." -> "et cetera"), to keep it when
    it was also the full stop.
    """
    after = _SPACES.match(text, position).end()
    ends = after == len(text) or text[after] == "\n" or (after > position and text[after].isupper())
    return "." if ends else ""


def spaced(words: str, text: str, start: int, end: int) -> str:
    """``words`` replacing ``text[start:end]``, with a space added on each side where it would
    otherwise touch a letter or digit (``"MP3"`` -> ``"MP three"``)."""
    if start > 0 and text[start - 1].isalnum():
        words = " " + words
    if end < len(text) and text[end].isalnum():
        words += " "
    return words
