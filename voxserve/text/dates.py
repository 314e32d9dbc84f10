"""Dates, times of day and weekday abbreviations read aloud."""

from __future__ import annotations

import re

from voxserve.text.context import full_stop_if_sentence_ends
from voxserve.text.numbers import cardinal, ordinal, year

MONTHS = (
    "January February March April May June July August September October November December"
).split()
_MONTH_BY_SPELLING = (
    {name: index for index, name in enumerate(MONTHS, start=1)}
    | {name[:3]: index for index, name in enumerate(MONTHS, start=1)}
    | {"Sept": 9}
)
_MONTH = "|".join(sorted(_MONTH_BY_SPELLING, key=len, reverse=True))
WEEKDAY_ABBREVIATIONS = {
    "Mon": "Monday", "Tue": "Tuesday", "Tues": "Tuesday", "Wed": "Wednesday",
    "Thu": "Thursday", "Thur": "Thursday", "Thurs": "Thursday", "Fri": "Friday",
    "Sat": "Saturday", "Sun": "Sunday",
}  # fmt: skip
_WEEKDAY = "|".join(sorted(WEEKDAY_ABBREVIATIONS, key=len, reverse=True))

# Patterns that would open with a look-behind open with a look-ahead at their first character
# instead: it lets the regex engine skip to the candidates rather than try every position
# (several times faster on long texts).
_ISO_DATE = re.compile(r"(?=\d)(?<![\d-])(\d{4})-(\d{2})-(\d{2})(?![\d-])")
# 03/15/2024 is American; a first number above 12 can only be a day (15/03/2024), and dots
# (15.03.2024) are the European order.
_SLASHED_DATE = re.compile(r"(?=\d)(?<![\d/.])(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(?![\d/]|\.\d)")
_ORDINAL_SUFFIX = r"(?:st|nd|rd|th)?"
_MONTH_FIRST = re.compile(
    rf"(?=[A-Z])\b(?P<month>{_MONTH})\.?[ \t]+(?P<day>\d{{1,2}}){_ORDINAL_SUFFIX}\b"
    r"(?:,?[ \t]+(?P<year>\d{4})\b)?"
)
_DAY_FIRST = re.compile(
    rf"(?=\d)\b(?P<day>\d{{1,2}}){_ORDINAL_SUFFIX}[ \t]+(?:of[ \t]+)?(?P<month>{_MONTH})\b\.?"
    r"(?:,?[ \t]+(?P<year>\d{4})\b)?"
)
_WEEKDAY_RANGE = re.compile(rf"(?=[A-Z])\b({_WEEKDAY})\.?[ \t]*[-\u2013][ \t]*({_WEEKDAY})\b(\.)?")
# "Sat." alone could be a verb ending a sentence; before a comma or a date it is a weekday.
_WEEKDAY_BEFORE_DATE = re.compile(rf"(?=[A-Z])\b({_WEEKDAY})\.(?=,|[ \t]+(?:\d|(?:{_MONTH})\b))")

_MERIDIEM = r"(?:[ \t]?(?P<meridiem>[AaPp])(?:\.[ \t]?[Mm](?P<dot>\.)?|[Mm])(?!\w))"
_CLOCK_TIME = re.compile(
    rf"(?=\d)(?<![\d:.])(?P<hour>\d{{1,2}}):(?P<minute>\d{{2}})(?::(?P<second>\d{{2}}))?(?![\d:])"
    rf"{_MERIDIEM}?"
)
_HOUR_AND_MERIDIEM = re.compile(rf"(?=\d)(?<![\d:.])(?P<hour>\d{{1,2}}){_MERIDIEM}")


def _spoken_date(month: int, day: int, year_numeral: str | None) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    words = f"{MONTHS[month - 1]} {ordinal(day)}"
    return f"{words}, {year(int(year_numeral))}" if year_numeral else words


def _speak_iso_date(match: re.Match[str]) -> str:
    return _spoken_date(int(match[2]), int(match[3]), match[1]) or match[0]


def _speak_slashed_date(match: re.Match[str]) -> str:
    first, second = int(match[1]), int(match[3])
    month, day = (second, first) if match[2] == "." or first > 12 else (first, second)
    return _spoken_date(month, day, match[4]) or match[0]


def _speak_named_month_date(match: re.Match[str]) -> str:
    month = _MONTH_BY_SPELLING[match["month"]]
    return _spoken_date(month, int(match["day"]), match["year"]) or match[0]


def _speak_weekday_range(match: re.Match[str]) -> str:
    first, last = WEEKDAY_ABBREVIATIONS[match[1]], WEEKDAY_ABBREVIATIONS[match[2]]
    full_stop = full_stop_if_sentence_ends(match.string, match.end()) if match[3] else ""
    return f"{first} to {last}{full_stop}"


def _speak_time(match: re.Match[str]) -> str:
    parts = match.groupdict()  # a bare hour ("7 a.m.") has no minute or second groups
    hour, minute = int(parts["hour"]), int(parts.get("minute") or 0)
    meridiem, second = parts["meridiem"], parts.get("second")
    if minute > 59 or hour > (12 if meridiem else 23) or (meridiem and hour == 0):
        return match[0]
    words = [cardinal(hour)]
    if minute:
        words.append(f"oh {cardinal(minute)}" if minute < 10 else cardinal(minute))
    elif meridiem is None:
        words.append("o'clock" if 1 <= hour <= 12 else "hundred")
    if second:
        seconds = int(second)
        words.append(f"and {cardinal(seconds)} second{'' if seconds == 1 else 's'}")
    if meridiem:
        words.append(f"{meridiem.lower()} m")
        if parts["dot"]:
            words[-1] += full_stop_if_sentence_ends(match.string, match.end())
    return " ".join(words)


def speak_dates(text: str) -> str:
    """``2024-03-15``, ``03/15/2024``, ``March 15, 2024`` and ``15 March 2024`` all become
    ``March fifteenth, twenty twenty-four``; ``Mon.-Fri.`` becomes ``Monday to Friday``."""
    text = _ISO_DATE.sub(_speak_iso_date, text)
    text = _SLASHED_DATE.sub(_speak_slashed_date, text)
    text = _MONTH_FIRST.sub(_speak_named_month_date, text)
    text = _DAY_FIRST.sub(_speak_named_month_date, text)
    text = _WEEKDAY_RANGE.sub(_speak_weekday_range, text)
    return _WEEKDAY_BEFORE_DATE.sub(lambda match: WEEKDAY_ABBREVIATIONS[match[1]], text)


def speak_times(text: str) -> str:
    """``3:30 pm`` -> ``three thirty p m``, ``10:05`` -> ``ten oh five``, ``14:00`` ->
    ``fourteen hundred``, ``7 a.m.`` -> ``seven a m``."""
    if ":" in text:
        text = _CLOCK_TIME.sub(_speak_time, text)
    return _HOUR_AND_MERIDIEM.sub(_speak_time, text)
