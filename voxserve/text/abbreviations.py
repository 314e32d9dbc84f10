"""Abbreviations: what they stand for, and whether their period can also end a sentence.

The same tables serve normalization (``Dr.`` -> ``Doctor``) and the sentence splitter, which
must not end a sentence after ``Dr.`` or ``e.g.`` but may after ``etc.`` or ``Inc.``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from voxserve.text.context import full_stop_if_sentence_ends, spaced
from voxserve.text.dates import MONTHS, WEEKDAY_ABBREVIATIONS

# Capitalized words that always lead into a name.
_TITLES = {
    "Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Mx": "Mix", "Prof": "Professor",
    "Rev": "Reverend", "Fr": "Father", "Mt": "Mount", "Gen": "General", "Sen": "Senator",
    "Rep": "Representative", "Gov": "Governor", "Pres": "President", "Capt": "Captain",
    "Lt": "Lieutenant", "Col": "Colonel", "Sgt": "Sergeant", "Hon": "Honorable",
}  # fmt: skip
# A title before a name ("St. Louis", "Dr. Smith"), a place after one ("Main St.", "Elm Dr.").
_TITLE_OR_PLACE = {"St": ("Saint", "Street"), "Dr": ("Doctor", "Drive")}
# Capitalized words that often close a name or a sentence.
_NAME_SUFFIXES = {
    "Jr": "Junior", "Sr": "Senior", "Inc": "Incorporated", "Ltd": "Limited", "Co": "Company",
    "Corp": "Corporation", "Bros": "Brothers", "Dept": "Department", "Ave": "Avenue",
    "Blvd": "Boulevard", "Rd": "Road",
}  # fmt: skip
# Lower-case (Latin and such): matched as written or with a capital first letter, period optional.
_LEADING_INTO_MORE = {
    "e.g": "for example", "i.e": "that is", "vs": "versus", "cf": "compare",
    "approx": "approximately", "viz": "namely",
}  # fmt: skip
# Lower-case ones that may close a sentence.
_CLOSING = {"etc": "et cetera", "a.m": "a m", "p.m": "p m", "Ph.D": "P H D"}

NEVER_END_SENTENCE = frozenset(
    key.lower() for key in (*_TITLES, *_TITLE_OR_PLACE, *_LEADING_INTO_MORE)
)
"""Lower-cased abbreviations (without their final period) after which no sentence ends."""

MAY_END_SENTENCE = frozenset(
    {key.lower() for key in (*_NAME_SUFFIXES, *_CLOSING, *WEEKDAY_ABBREVIATIONS)}
    | {month[:3].lower() for month in MONTHS}
    | {"sept", "no", "nos"}
)
"""Lower-cased abbreviations whose period ends a sentence only when a capital letter follows."""


def _alternation(spellings: Iterable[str]) -> str:
    return "|".join(re.escape(spelling) for spelling in sorted(spellings, key=len, reverse=True))


_SPOKEN_BY_LOWERCASE = {
    key.lower(): spoken for key, spoken in {**_LEADING_INTO_MORE, **_CLOSING}.items()
}
_LOWERCASE_SPELLINGS = {
    spelling
    for key in (*_LEADING_INTO_MORE, *_CLOSING)
    for spelling in (key.lower(), key[0].upper() + key[1:])
}
_FIRST_LETTERS = "".join(sorted({spelling[0] for spelling in _LOWERCASE_SPELLINGS}))
# Patterns that would open with a look-behind open with a look-ahead at their first character
# instead: it lets the regex engine skip to the candidates rather than try every position
# (several times faster on long texts).
_LOWERCASE_ABBREVIATION = re.compile(
    rf"(?=[{_FIRST_LETTERS}])(?<![\w.])({_alternation(_LOWERCASE_SPELLINGS)})(\.)?(?!\w)"
)
_CAPITALIZED_ABBREVIATION = re.compile(
    rf"(?=[A-Z])(?<![\w.])({_alternation({*_TITLES, *_TITLE_OR_PLACE, *_NAME_SUFFIXES})})\."
)
_INITIALISM = re.compile(r"(?=[A-Z])(?<![\w.])([A-Z](?:\.[A-Z])+)(\.)?(?!\w)")
_NUMBER_SIGN = re.compile(r"(?=[Nn])(?<![\w.])[Nn]o\.[ \t]?(?=\d)")
_LINE_END = re.compile(r"[ \t]*(?:\n|$)")


def _expand_lowercase(match: re.Match[str]) -> str:
    key = match[1].lower()
    spoken = _SPOKEN_BY_LOWERCASE[key]
    if key in _LEADING_INTO_MORE or not match[2]:
        return spoken
    return spoken + full_stop_if_sentence_ends(match.string, match.end())


def _expand_initialism(match: re.Match[str]) -> str:
    full_stop = full_stop_if_sentence_ends(match.string, match.end()) if match[2] else ""
    return match[1].replace(".", " ") + full_stop


def _follows_name_or_number(text: str, start: int) -> bool:
    """Whether the word before ``start`` is a number ("5th St.") or a capitalized word that does
    not merely open its sentence ("on Main St." but not "Visit St. Louis")."""
    before = text[max(0, start - 60) : start]
    words = before.split()
    if not words or not before[-1].isspace():
        return False
    previous = words[-1]
    if previous[0].isdigit():
        return True
    opens_sentence = len(words) == 1 or words[-2][-1] in ".!?:"
    return previous.isalpha() and previous[0].isupper() and not opens_sentence


def _expand_capitalized(match: re.Match[str]) -> str:
    key, text = match[1], match.string
    is_place = key in _TITLE_OR_PLACE and _follows_name_or_number(text, match.start())
    if key in _NAME_SUFFIXES or is_place:
        spoken = _NAME_SUFFIXES.get(key) or _TITLE_OR_PLACE[key][1]
        return spoken + full_stop_if_sentence_ends(text, match.end())
    spoken = _TITLES.get(key) or _TITLE_OR_PLACE[key][0]
    # A title's period ends nothing, unless nothing follows it on its line.
    if _LINE_END.match(text, match.end()):
        return spoken + "."
    return spaced(spoken, text, match.start(), match.end())


def expand_abbreviations(text: str) -> str:
    """``Dr. Smith`` -> ``Doctor Smith``, ``Main St.`` -> ``Main Street``, ``e.g.`` -> ``for
    example``, ``U.S.`` -> ``U S``, ``No. 5`` -> ``number 5``; a dropped period that also ended
    the sentence is kept."""
    text = _LOWERCASE_ABBREVIATION.sub(_expand_lowercase, text)
    text = _INITIALISM.sub(_expand_initialism, text)
    text = _NUMBER_SIGN.sub("number ", text)
    return _CAPITALIZED_ABBREVIATION.sub(_expand_capitalized, text)
