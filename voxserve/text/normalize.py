"""English text normalization: what is written turned into what a voice should say.

Each step rewrites one kind of thing and leaves the rest for the steps after it; the order
matters (addresses before abbreviations, dates before plain numbers, ranges before money).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from voxserve.text.abbreviations import expand_abbreviations
from voxserve.text.dates import speak_dates, speak_times
from voxserve.text.links import speak_links
from voxserve.text.markup import strip_markup
from voxserve.text.numerals import (
    mark_ranges,
    speak_decades,
    speak_numerals,
    speak_phone_numbers,
)
from voxserve.text.quantities import speak_measurements, speak_money, speak_percentages
from voxserve.text.roman import speak_roman_numerals
from voxserve.text.speakable import drop_control_characters
from voxserve.text.symbols import speak_symbols
from voxserve.text.typography import unify_typography

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
# Applied after whitespace is collapsed to single spaces.
_SPACE_BEFORE_PUNCTUATION = re.compile(r" (?=[.,!?;:)\]])")
_SPACE_AFTER_OPENING = re.compile(r"([(\[]) ")
# What removals leave behind: ", ." -> ".".
_DANGLING_PUNCTUATION = re.compile(r"[,;:]+(?=[.,!?;:])")


def _tidy_paragraph(paragraph: str) -> str:
    paragraph = " ".join(_EMPTY_BRACKETS.sub("", paragraph).split())
    paragraph = _SPACE_BEFORE_PUNCTUATION.sub("", paragraph)
    paragraph = _SPACE_AFTER_OPENING.sub(r"\1", paragraph)
    # Punctuation cannot open a paragraph (a removed emoji or code span may leave some).
    return _DANGLING_PUNCTUATION.sub("", paragraph).lstrip(",;:.!? ").rstrip()


def _tidy_whitespace(text: str) -> str:
    """Spaces collapsed within each paragraph; paragraphs kept apart by one blank line."""
    paragraphs = (_tidy_paragraph(paragraph) for paragraph in _PARAGRAPH_BREAK.split(text))
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)


_STEPS: tuple[Callable[[str], str], ...] = (
    drop_control_characters,
    unify_typography,
    strip_markup,
    speak_links,
    speak_phone_numbers,
    speak_dates,
    speak_times,
    expand_abbreviations,
    speak_roman_numerals,
    mark_ranges,
    speak_decades,
    speak_money,
    speak_percentages,
    speak_measurements,
    speak_numerals,
    speak_symbols,
    _tidy_whitespace,
)


def normalize_text(text: str) -> str:
    """Rewrite English ``text`` so a voice reads it right: numbers, dates, times, money, units,
    abbreviations, addresses and symbols spelled out; Markdown, HTML, code and emoji removed.

    Paragraphs stay separated by a blank line; every other run of whitespace becomes one space.
    """
    for step in _STEPS:
        text = step(text)
    return text
