"""Roman numerals, read only where they cannot be a word or a letter: "World War II",
"Chapter IV", "Henry VIII"."""

from __future__ import annotations

import re

from voxserve.text.numbers import cardinal, ordinal

_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
_NUMERAL = r"M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
# After these words a numeral counts: "World War two", "Chapter four".
_COUNTED = re.compile(
    r"(?=[A-Z])\b((?:World War|Super Bowl|Part|Chapter|Volume|Episode|Act|Phase|Book|Season|Article"
    rf"|Stage|Type|Class)[ \t]+)(?=[IVXLCDM])({_NUMERAL})\b"
)
# After a monarch's or pope's name it is a regnal number: "Henry the eighth". A lone "I" stays,
# it is too often the pronoun ("George I think").
_REGNAL = re.compile(
    r"(?=[A-Z])\b((?:Henry|Edward|George|William|Richard|Charles|James|John|Louis|Elizabeth|Mary|Philip"
    r"|Frederick|Peter|Catherine|Alexander|Napoleon|Pius|Leo|Benedict|Gregory|Innocent|Clement"
    rf"|Paul|Ramesses|Constantine)[ \t]+)(?=[IVXLCDM])(?!I\b)({_NUMERAL})\b"
)


def _value(numeral: str) -> int:
    total = 0
    for character, following in zip(numeral, [*numeral[1:], None], strict=True):
        value = _VALUES[character]
        # A smaller value before a larger one is subtracted: IV, XC.
        total += -value if following and _VALUES[following] > value else value
    return total


def speak_roman_numerals(text: str) -> str:
    """``World War II`` -> ``World War two``, ``Henry VIII`` -> ``Henry the eighth``."""
    text = _COUNTED.sub(lambda match: match[1] + cardinal(_value(match[2])), text)
    return _REGNAL.sub(lambda match: f"{match[1]}the {ordinal(_value(match[2]))}", text)
