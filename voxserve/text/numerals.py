"""Numbers in running text: phone numbers, ranges, decades, fractions, ordinals, versions,
decimals and plain integers (read as years where they look like one)."""

from __future__ import annotations

import re

from voxserve.text.context import spaced
from voxserve.text.numbers import cardinal, digits, ordinal, spoken_number, year

# Patterns that would open with a look-behind open with a look-ahead at their first character
# instead: it lets the regex engine skip to the candidates rather than try every position
# (several times faster on long texts).
_PHONE_NUMBER = re.compile(
    r"(?=[+(\d])(?<![\w+-])(?:(?P<country>\+\d{1,2})[ .-]?)?"
    r"(?:\((?P<area>\d{3})\) ?|(?P<bare_area>\d{3})[ .-])(?P<exchange>\d{3})[ .-](?P<line>\d{4})"
    r"(?![\w-])"
)
# "10-20" and "10 – 20", but not "5 - 3" (a subtraction) nor dates and phone numbers, which the
# steps before have read; the digits stay for the steps after ("10 to 20%").
_RANGE_END = r"([$\u00a3\u20ac]?\d+(?:[.,]\d+)*)"
_RANGE = re.compile(
    rf"(?=[$\u00a3\u20ac\d])(?<![\w.,-]){_RANGE_END}(?:-|[ \t]*\u2013[ \t]*){_RANGE_END}"
    r"(?![\w.,-]?\d)"
)
_FOUR_DIGIT_DECADE = re.compile(r"(?=\d)(?<![\w.,])(1[1-9]|20)(\d)0s\b")
# "80s" alone may be eighty seconds; "the 80s", "mid-80s" and "'80s" are decades.
_TWO_DIGIT_DECADE = re.compile(
    r"(?:\b((?:[Tt]he|early|mid|late)(?:[ \t]+|-))'?|(?<![\w.,])')([2-9])0s\b"
)
_SUBTRACTION = re.compile(r"(?=[ \t])(?<=\d)[ \t]+-[ \t]+(?=-?\d)")
_PRODUCT = re.compile(r"(?=[ \tx\u00d7*])(?<=\d)[ \t]*([x\u00d7*])[ \t]*(?=\d)")
_PRODUCT_WORDS = {"x": " by ", "\u00d7": " times ", "*": " times "}
_FRACTION = re.compile(r"(?=\d)(?<![\d/.,])(?:(\d+)[ \t]+)?(\d+)/(\d+)(?![\d/])")
_DENOMINATORS = {2: ("half", "halves"), 4: ("quarter", "quarters")}
_ORDINAL = re.compile(r"(?=\d)(?<![\d.,])(\d{1,3}(?:,\d{3})+|\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER_SIGN = re.compile(r"#[ \t]?(?=\d)")
# "v1.2" or "1.2.3": three or more parts cannot be a decimal.
_VERSION = re.compile(
    r"(?=[vV\d])(?<![\w.])(?:([vV])(?=\d))?(\d+(?:\.\d+){2,}|(?<=[vV])\d+(?:\.\d+)+)(?!\.?\d)"
)
_LEADING_POINT = re.compile(r"(?=\.)(?<![\w.])\.(\d+)(?!\.?\d)")
_NUMBER = re.compile(
    r"(?=[-\d])(?:(?<![\w.,-])-)?(?<!\d)(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)"
)
_YEAR = re.compile(r"1[1-9]\d\d|20\d\d")


def _speak_phone_number(match: re.Match[str]) -> str:
    groups = [match["area"] or match["bare_area"], match["exchange"], match["line"]]
    spoken = ", ".join(digits(group) for group in groups)
    return f"plus {digits(match['country'])}, {spoken}" if match["country"] else spoken


def _plural_of_number_word(words: str) -> str:
    """``nineteen ninety`` -> ``nineteen nineties``."""
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _speak_fraction(match: re.Match[str]) -> str:
    whole, numerator, denominator = match[1], int(match[2]), int(match[3])
    if not 0 < numerator < denominator <= 10:
        return match[0]  # "24/7", "50/50", "9/11": read the numbers as they come
    if denominator in _DENOMINATORS:
        singular, plural = _DENOMINATORS[denominator]
    else:
        singular = ordinal(denominator)
        plural = singular + "s"
    if numerator > 1:
        fraction = f"{cardinal(numerator)} {plural}"
    else:  # "one half", but "one and a half"
        fraction = f"{'a' if whole else 'one'} {singular}"
    return f"{spoken_number(whole)} and {fraction}" if whole else fraction


def _speak_version(match: re.Match[str]) -> str:
    spoken = " point ".join(cardinal(int(part)) for part in match[2].split("."))
    return f"version {spoken}" if match[1] else spoken


def _speak_number(match: re.Match[str]) -> str:
    numeral = match[0]
    words = year(int(numeral)) if _YEAR.fullmatch(numeral) else spoken_number(numeral)
    return spaced(words, match.string, match.start(), match.end())


def speak_phone_numbers(text: str) -> str:
    """``(555) 123-4567`` -> ``five five five, one two three, four five six seven``."""
    return _PHONE_NUMBER.sub(_speak_phone_number, text)


def mark_ranges(text: str) -> str:
    """``10-20`` -> ``10 to 20``."""
    return _RANGE.sub(r"\1 to \2", text)


def speak_decades(text: str) -> str:
    """``1990s`` -> ``nineteen nineties``, ``the '80s`` -> ``the eighties``."""
    if "0s" not in text:
        return text
    text = _FOUR_DIGIT_DECADE.sub(
        lambda match: _plural_of_number_word(year(int(f"{match[1]}{match[2]}0"))), text
    )
    return _TWO_DIGIT_DECADE.sub(
        lambda match: (match[1] or "") + _plural_of_number_word(cardinal(int(match[2]) * 10)), text
    )


def speak_numerals(text: str) -> str:
    """Every remaining numeral as words: ``3 - 1``, ``2 × 3``, ``1/2``, ``1 1/2``, ``22nd``,
    ``#5``, ``v1.2.3``, ``3.14``, ``.5``, ``-7``, ``1,234,567``, and ``1999`` as a year."""
    text = _SUBTRACTION.sub(" minus ", text)
    text = _PRODUCT.sub(lambda match: _PRODUCT_WORDS[match[1]], text)
    if "/" in text:
        text = _FRACTION.sub(_speak_fraction, text)
    text = _ORDINAL.sub(lambda match: ordinal(int(match[1].replace(",", ""))), text)
    text = _NUMBER_SIGN.sub("number ", text)
    text = _VERSION.sub(_speak_version, text)
    text = _LEADING_POINT.sub(lambda match: f"point {digits(match[1])}", text)
    return _NUMBER.sub(_speak_number, text)
