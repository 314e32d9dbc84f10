"""Typographic variants folded into the plain characters the later steps look for."""

from __future__ import annotations

import re
import unicodedata

_PLAIN_EQUIVALENTS = {
        "\r": "\n",
        "\t": " ",
        "\u00a0": " ", "\u2007": " ", "\u2009": " ", "\u202f": " ", "\u3000": " ",
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
        "\u2026": "...",
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2212": "-", "\ufe63": "-", "\uff0d": "-",
        "\u2103": "\u00b0C", "\u2109": "\u00b0F",
}  # fmt: skip
# One pass over the rare characters; str.translate would look up every character.
_TYPOGRAPHIC = re.compile("|".join(_PLAIN_EQUIVALENTS))
_FRACTION_CHARACTERS = "\u00bc-\u00be\u2150-\u215e"
# The look-ahead lets the regex engine skip to candidates instead of trying every position.
_VULGAR_FRACTION = re.compile(rf"(?=[\d{_FRACTION_CHARACTERS}])(\d?)([{_FRACTION_CHARACTERS}])")


def _spell_fraction(match: re.Match[str]) -> str:
    # NFKC turns "½" into "1⁄2" (with a fraction slash); "1½" must become "1 1/2", not "11/2".
    fraction = unicodedata.normalize("NFKC", match[2]).replace("\u2044", "/")
    return f"{match[1]} {fraction}" if match[1] else fraction


def unify_typography(text: str) -> str:
    """Line endings, exotic spaces, curly quotes, the ellipsis character, Unicode minus and
    hyphens, ``℃``, and vulgar fractions (``½``) folded into their ASCII spellings."""
    text = _TYPOGRAPHIC.sub(lambda match: _PLAIN_EQUIVALENTS[match[0]], text.replace("\r\n", "\n"))
    return text if text.isascii() else _VULGAR_FRACTION.sub(_spell_fraction, text)
