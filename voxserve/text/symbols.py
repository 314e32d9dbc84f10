"""Symbols said as words; those with nothing to say (stray Markdown, brackets) dropped."""

from __future__ import annotations

import re

_SYMBOL_WORDS = {
    "->": " to ", "=>": " to ", "\u2192": " to ", "\u21d2": " to ", "\u27f6": " to ",
    "<=": " less than or equal to ", "\u2264": " less than or equal to ",
    ">=": " greater than or equal to ", "\u2265": " greater than or equal to ",
    "!=": " not equal to ", "\u2260": " not equal to ", "==": " equals ", "=": " equals ",
    "<": " less than ", ">": " greater than ",
    "&": " and ", "+": " plus ", "\u00b1": " plus or minus ", "\u00d7": " times ",
    "\u00f7": " divided by ", "@": " at ", "\u2248": " approximately ", "\u00b0": " degrees ",
    "%": " percent ", "\u00a7": " section ", "\u2116": " number ", "/": " ",
}  # fmt: skip
_SYMBOL = re.compile(
    "|".join(re.escape(symbol) for symbol in sorted(_SYMBOL_WORDS, key=len, reverse=True))
)
_APPROXIMATELY = re.compile(r"~(?=[ \t]?[\w$\u00a3\u20ac])")
_SHARP = re.compile(r"(?<=\b[CF])#(?!\w)")  # the languages C# and F#
# Characters a voice would spell out or choke on, with no word worth saying.
_UNSPOKEN = re.compile(r"[*_^|\\{}\[\]`#~$\u00a3\u20ac\u00a5\u2022\u00b7\u00b6\u2020\u2021]+")


def speak_symbols(text: str) -> str:
    """``&`` -> ``and``, ``+`` -> ``plus``, ``=`` -> ``equals``, ``@`` -> ``at``, ``~5`` ->
    ``approximately five``, ``→`` -> ``to``; leftover Markdown and brackets removed."""
    text = _APPROXIMATELY.sub(" approximately ", text)
    text = _SHARP.sub(" sharp", text)
    text = _SYMBOL.sub(lambda match: _SYMBOL_WORDS[match[0]], text)
    return _UNSPOKEN.sub(" ", text)
