"""SSML's ``<say-as interpret-as="...">`` read as words in the voicing's language, through the
normalizers that read running text (``numbers``, ``dates``, ``localized``).

English is read by its own number words; the languages of ``localized.LOCALES`` by num2words
through their normalizer; any other language has no words here, so its text goes as written
(the engine reads it), as plain text in that language does. A text its kind cannot read ("abc"
as a cardinal, 13/45/2024 as a date) is refused: a ``ValueError`` whose message the SSML
planner turns into a 400 naming the element.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from voxserve.text import normalize_for
from voxserve.text.localized import LocalizedNormalizer, normalizer_for
from voxserve.text.numbers import NUMBER_PATTERN, digits, ordinal, spoken_number

KINDS = ("characters", "cardinal", "ordinal", "date", "time", "telephone")
"""The ``interpret-as`` values read here."""
DATE_FORMATS = ("mdy", "dmy", "ymd")
"""The ``format`` values of a date: the order its day, month and year are written in."""

_CARDINAL = re.compile(rf"-?{NUMBER_PATTERN}")
_ORDINAL = re.compile(r"(\d+)(?:st|nd|rd|th|\.|º|ª|er|e|ste|de)?", re.IGNORECASE)
_DATE_PARTS = re.compile(r"(\d{1,4})[-/. ](\d{1,2})[-/. ](\d{1,4})")
_TIME = re.compile(
    r"([01]?\d|2[0-3])(?::|h)([0-5]\d)(?::[0-5]\d)?(\s?[ap]\.?\s?m\.?)?", re.IGNORECASE
)
_TELEPHONE = re.compile(r"\+?[\d\s().-]*\d[\d\s().-]*")
_DIGIT_GROUP = re.compile(r"\d+")


def say_as(kind: str, text: str, language: str, date_format: str | None = None) -> str:
    """``text`` read as ``kind`` (one of ``KINDS``) in ``language``; raises ValueError saying
    what could not be read."""
    written = " ".join(text.split())
    if not written:
        raise ValueError("has nothing to read")
    readers: dict[str, Callable[[str, str], str]] = {
        "characters": _characters,
        "cardinal": _cardinal,
        "ordinal": _ordinal,
        "time": _time,
        "telephone": _telephone,
    }
    if kind == "date":
        return _date(written, language, date_format)
    return readers[kind](written, language)


def _localized(language: str) -> LocalizedNormalizer | None:
    normalizer = normalizer_for(language) if language else None
    return normalizer if isinstance(normalizer, LocalizedNormalizer) else None


def _english(language: str) -> bool:
    return not language or language.replace("_", "-").lower().split("-")[0] == "en"


def _digit_words(digits_written: str, language: str) -> str:
    """One word per digit."""
    if _english(language):
        return digits(digits_written)
    localized = _localized(language)
    if localized is None:
        return " ".join(digits_written)
    return " ".join(localized.words(int(digit)) for digit in digits_written)


def _characters(written: str, language: str) -> str:
    # Each letter as a capital followed by a comma: espeak reads a lone "A" as the article
    # ("uh") but "A," as the letter's name, and the commas are the small breaks of spelling.
    spelled = [
        _digit_words(character, language) if character.isdigit() else character.upper()
        for character in written
        if not character.isspace()
    ]
    return ", ".join(spelled)


def _cardinal(written: str, language: str) -> str:
    if _english(language):
        if not _CARDINAL.fullmatch(written.replace(" ", "")):
            raise ValueError(f"{written!r} is not a number")
        return spoken_number(written.replace(" ", ""))
    plain = re.sub(r"[\s.]", "", written)  # the thousands points and spaces of other languages
    if not re.fullmatch(r"-?\d+", plain):
        raise ValueError(f"{written!r} is not a whole number")
    localized = _localized(language)
    return localized.words(int(plain)) if localized is not None else written


def _ordinal(written: str, language: str) -> str:
    match = _ORDINAL.fullmatch(written)
    if match is None:
        raise ValueError(f"{written!r} is not an ordinal number")
    if _english(language):
        return ordinal(int(match[1]))
    localized = _localized(language)
    return localized.words(int(match[1]), to="ordinal") if localized is not None else written


def _date(written: str, language: str, date_format: str | None) -> str:
    match = _DATE_PARTS.fullmatch(written)
    if match is None:
        raise ValueError(f"{written!r} is not a date written in numbers (2024-03-15, 03/15/2024)")
    if date_format is None:  # a year first, else the language's usual order
        date_format = "ymd" if len(match[1]) == 4 else "mdy" if _english(language) else "dmy"
    parts = dict(zip(date_format, (int(part) for part in match.groups()), strict=True))
    year, month, day = parts["y"], parts["m"], parts["d"]
    if not (1 <= month <= 12 and 1 <= day <= 31 and 1000 <= year <= 9999):
        raise ValueError(f"{written!r} is not a date in the order {date_format}")
    # Written the one way every normalizer reads, then read by the language's own.
    return normalize_for(f"{year:04d}-{month:02d}-{day:02d}", language)


def _time(written: str, language: str) -> str:
    match = _TIME.fullmatch(written)
    if match is None or (match[3] and not 1 <= int(match[1]) <= 12):
        raise ValueError(f"{written!r} is not a time of day (14:30, 3:30 pm)")
    return normalize_for(written.replace("h", ":"), language)


def _telephone(written: str, language: str) -> str:
    if not _TELEPHONE.fullmatch(written):
        raise ValueError(f"{written!r} is not a telephone number")
    groups = [_digit_words(group, language) for group in _DIGIT_GROUP.findall(written)]
    spoken = ", ".join(groups)
    return f"plus {spoken}" if written.startswith("+") and _english(language) else spoken
