"""Integers and decimal numerals as English words (American style: no "and" inside numbers)."""

from __future__ import annotations

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_IRREGULAR_ORDINALS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip

# Beyond the trillions nobody says the number; reading the digits is clearer.
_LARGEST_SPOKEN = 10**15 - 1

NUMBER_PATTERN = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
"""A numeral with optional thousands separators and decimals, for the steps that read numbers."""


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    words = [f"{_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(f"{_TENS[tens]}-{_ONES[ones]}" if ones else _TENS[tens])
    elif rest:
        words.append(_ONES[rest])
    return " ".join(words)


def cardinal(n: int) -> str:
    """``1234`` -> ``one thousand two hundred thirty-four``; negatives get ``minus``."""
    if n < 0:
        return f"minus {cardinal(-n)}"
    if n < 1000:
        return _below_thousand(n) or "zero"
    if n > _LARGEST_SPOKEN:
        return digits(str(n))
    words = []
    for scale, name in _SCALES:
        count, n = divmod(n, scale)
        if count:
            words.append(f"{_below_thousand(count)} {name}")
    if n:
        words.append(_below_thousand(n))
    return " ".join(words)


def ordinal(n: int) -> str:
    """``22`` -> ``twenty-second``."""
    words = cardinal(n)
    # Only the last word changes: "one hundred twenty-one" -> "one hundred twenty-first".
    cut = max(words.rfind(" "), words.rfind("-")) + 1
    head, last = words[:cut], words[cut:]
    if last in _IRREGULAR_ORDINALS:
        return head + _IRREGULAR_ORDINALS[last]
    if last.endswith("y"):
        return f"{head}{last[:-1]}ieth"
    return f"{head}{last}th"


def year(n: int) -> str:
    """``1999`` -> ``nineteen ninety-nine``, ``2005`` -> ``two thousand five``, ``1905`` ->
    ``nineteen oh five``; numbers outside 1000-9999 are read as cardinals."""
    if not 1000 <= n <= 9999 or n % 1000 == 0 or 2000 < n < 2010:
        return cardinal(n)
    century, rest = divmod(n, 100)
    if rest == 0:
        return f"{cardinal(century)} hundred"
    if rest < 10:
        return f"{cardinal(century)} oh {_ONES[rest]}"
    return f"{cardinal(century)} {cardinal(rest)}"


def digits(numeral: str) -> str:
    """``"007"`` -> ``zero zero seven``: one word per digit, other characters dropped."""
    return " ".join(_ONES[int(character)] for character in numeral if character.isdigit())


def spoken_number(numeral: str) -> str:
    """Read a numeral such as ``-1,234.56`` or ``007``: cardinal integer part, decimals digit by
    digit (``three point one four``), a leading zero read as a digit string."""
    sign, numeral = ("minus ", numeral[1:]) if numeral.startswith("-") else ("", numeral)
    whole, _, fraction = numeral.partition(".")
    whole = whole.replace(",", "")
    if len(whole) > 1 and whole.startswith("0") and not fraction:
        words = digits(whole)  # codes and IDs: "007" is "zero zero seven"
    else:
        words = cardinal(int(whole or "0"))
    if fraction:
        words = f"{words} point {digits(fraction)}"
    return sign + words
