"""Looking around a match: small helpers shared by the rewriting steps of normalization."""

from __future__ import annotations

import re

_SPACES = re.compile(r"[ \t]*")


def sentence_ends_at(text: str, position: int) -> bool:
    """Whether a sentence plausibly ends at ``position``: nothing but spaces follow before the end
    of the text, a line break or a capital letter.

    Used when an abbreviation's own period is dropped ("etc." -> "et cetera") to decide whether
    that period was also the full stop.
    """
    after = _SPACES.match(text, position).end()
    return after == len(text) or text[after] == "\n" or (after > position and text[after].isupper())


def full_stop_if_sentence_ends(text: str, position: int) -> str:
    """``"."`` where :func:`sentence_ends_at` says so, else ``""``."""
    return "." if sentence_ends_at(text, position) else ""


def spaced(words: str, text: str, start: int, end: int) -> str:
    """``words`` replacing ``text[start:end]``, with a space added on each side where it would
    otherwise touch a letter or digit (``"MP3"`` -> ``"MP three"``)."""
    if start > 0 and text[start - 1].isalnum():
        words = " " + words
    if end < len(text) and text[end].isalnum():
        words += " "
    return words
