"""Amounts of money, percentages and measurements read with their units."""

from __future__ import annotations

import re
from typing import NamedTuple

from voxserve.text.context import full_stop_if_sentence_ends
from voxserve.text.numbers import NUMBER_PATTERN, cardinal, spoken_number


class _Currency(NamedTuple):
    unit: str
    units: str
    cent: str | None
    """The hundredth's name, singular; ``None`` where amounts are read as decimals (yen)."""
    cents: str | None


_CURRENCIES = {
    "$": _Currency("dollar", "dollars", "cent", "cents"),
    "\u00a3": _Currency("pound", "pounds", "penny", "pence"),
    "\u20ac": _Currency("euro", "euros", "cent", "cents"),
    "\u00a5": _Currency("yen", "yen", None, None),
}
_SCALE_SUFFIXES = {
    "k": "thousand", "K": "thousand", "m": "million", "M": "million", "mn": "million",
    "b": "billion", "B": "billion", "bn": "billion", "T": "trillion",
}  # fmt: skip

# A sign counts only where it cannot be a hyphen ("COVID-19") or a range dash.
# Patterns that would open with a look-behind open with a look-ahead at their first character
# instead: it lets the regex engine skip to the candidates rather than try every position
# (several times faster on long texts).
_SIGNED_NUMBER = rf"(?=[-\d])(?:(?<![\w.,-])-)?(?<![\d.,]){NUMBER_PATTERN}"
_MONEY = re.compile(
    rf"(?=[-$\u00a3\u20ac\u00a5])(?P<sign>(?<![\w.,-])-)?(?P<currency>[$\u00a3\u20ac\u00a5])[ \t]?"
    rf"(?P<amount>{NUMBER_PATTERN})"
    r"(?:[ \t]+(?P<scale>thousand|million|billion|trillion)\b"
    rf"|(?P<suffix>{'|'.join(sorted(_SCALE_SUFFIXES, key=len, reverse=True))})(?!\w))?"
)
_AMOUNT_THEN_CURRENCY = re.compile(
    rf"(?P<amount>{_SIGNED_NUMBER})[ \t]?(?P<currency>[\u00a3\u20ac])"
)
_PERCENTAGE = re.compile(rf"({_SIGNED_NUMBER})[ \t]?%")

# symbol -> (singular, plural)
_UNITS = {
    "km": ("kilometer", "kilometers"), "m": ("meter", "meters"),
    "cm": ("centimeter", "centimeters"), "mm": ("millimeter", "millimeters"),
    "\u00b5m": ("micrometer", "micrometers"), "nm": ("nanometer", "nanometers"),
    "mi": ("mile", "miles"), "ft": ("foot", "feet"), "yd": ("yard", "yards"),
    "in": ("inch", "inches"),
    "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"), "mg": ("milligram", "milligrams"),
    "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"), "oz": ("ounce", "ounces"),
    "L": ("liter", "liters"), "ml": ("milliliter", "milliliters"),
    "mL": ("milliliter", "milliliters"),
    "mph": ("mile per hour", "miles per hour"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "m/s": ("meter per second", "meters per second"),
    "\u00b0C": ("degree Celsius", "degrees Celsius"),
    "\u00b0F": ("degree Fahrenheit", "degrees Fahrenheit"), "\u00b0": ("degree", "degrees"),
    "ns": ("nanosecond", "nanoseconds"), "\u00b5s": ("microsecond", "microseconds"),
    "ms": ("millisecond", "milliseconds"), "s": ("second", "seconds"),
    "sec": ("second", "seconds"), "secs": ("second", "seconds"),
    "min": ("minute", "minutes"), "mins": ("minute", "minutes"),
    "h": ("hour", "hours"), "hr": ("hour", "hours"), "hrs": ("hour", "hours"),
    "KB": ("kilobyte", "kilobytes"), "kB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"), "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"), "PB": ("petabyte", "petabytes"),
    "kbps": ("kilobit per second", "kilobits per second"),
    "Mbps": ("megabit per second", "megabits per second"),
    "Gbps": ("gigabit per second", "gigabits per second"),
    "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"),
    "MHz": ("megahertz", "megahertz"), "GHz": ("gigahertz", "gigahertz"),
    "W": ("watt", "watts"), "kW": ("kilowatt", "kilowatts"), "MW": ("megawatt", "megawatts"),
    "kWh": ("kilowatt hour", "kilowatt hours"), "V": ("volt", "volts"),
    "mAh": ("milliamp hour", "milliamp hours"),
    "x": ("times", "times"),
}  # fmt: skip
_UNIT_ALTERNATION = "|".join(
    re.escape(symbol) + ("(?![ \t]*[\\w(])" if symbol == "in" else "")  # "5 in the box"
    for symbol in sorted(_UNITS, key=len, reverse=True)
)
_MEASUREMENT = re.compile(
    rf"(?P<amount>{_SIGNED_NUMBER})[ \t]?(?P<unit>{_UNIT_ALTERNATION})(?![\w/])(?P<dot>\.(?!\w))?"
)


def _say_amount(currency: _Currency, amount: str, scale: str | None, negative: bool) -> str:
    sign = "minus " if negative else ""
    whole, _, fraction = amount.partition(".")
    if scale:  # "$2.5 million" is "two point five million dollars"
        return f"{sign}{spoken_number(amount)} {scale} {currency.units}"
    if currency.cent is None or len(fraction) > 2:
        plural = amount != "1"
        return f"{sign}{spoken_number(amount)} {currency.units if plural else currency.unit}"
    units = int(whole.replace(",", ""))
    cents = int(fraction.ljust(2, "0")) if fraction else 0
    parts = []
    if units or not cents:
        parts.append(f"{cardinal(units)} {currency.unit if units == 1 else currency.units}")
    if cents:
        parts.append(f"{cardinal(cents)} {currency.cent if cents == 1 else currency.cents}")
    return sign + " and ".join(parts)


def _speak_money(match: re.Match[str]) -> str:
    scale = match["scale"] or _SCALE_SUFFIXES.get(match["suffix"] or "")
    return _say_amount(_CURRENCIES[match["currency"]], match["amount"], scale, bool(match["sign"]))


def _speak_amount_then_currency(match: re.Match[str]) -> str:
    amount = match["amount"]
    negative = amount.startswith("-")
    return _say_amount(_CURRENCIES[match["currency"]], amount.lstrip("-"), None, negative)


def _speak_measurement(match: re.Match[str]) -> str:
    amount = match["amount"]
    singular, plural = _UNITS[match["unit"]]
    words = f"{spoken_number(amount)} {singular if amount.lstrip('-') == '1' else plural}"
    # "in." or "ft." may have ended the sentence.
    return words + (full_stop_if_sentence_ends(match.string, match.end()) if match["dot"] else "")


def speak_money(text: str) -> str:
    """``$3.50`` -> ``three dollars and fifty cents``, ``$1`` -> ``one dollar``, ``£20``,
    ``15€``, ``$2.5 million`` and ``$1.2B`` -> ``one point two billion dollars``."""
    if not any(symbol in text for symbol in _CURRENCIES):
        return text
    text = _MONEY.sub(_speak_money, text)
    return _AMOUNT_THEN_CURRENCY.sub(_speak_amount_then_currency, text)


def speak_percentages(text: str) -> str:
    """``3.5%`` -> ``three point five percent``."""
    if "%" not in text:
        return text
    return _PERCENTAGE.sub(lambda match: f"{spoken_number(match[1])} percent", text)


def speak_measurements(text: str) -> str:
    """A number followed by a unit symbol: ``1 km`` -> ``one kilometer``, ``5 kg`` -> ``five
    kilograms``, ``-5°C`` -> ``minus five degrees Celsius``, ``2x`` -> ``two times``."""
    return _MEASUREMENT.sub(_speak_measurement, text)
