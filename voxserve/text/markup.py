"""Markdown, HTML, code and emoji taken out of text, so that a voice reads only the prose.

Chat models answer in Markdown; none of its syntax, no code and no pictograph should be spoken.
Structure that carries meaning survives as punctuation: each heading, list item and table row
becomes a sentence of its own.
"""

from __future__ import annotations

import html
import re
import unicodedata

_FENCED_CODE = re.compile(
    # An unterminated fence (a model still streaming its answer) runs to the end of the text.
    r"^[ \t]*(?P<fence>`{3,}|~{3,})[^\n]*(?:\n.*?)??(?:\n[ \t]*(?P=fence)[`~]*[ \t]*(?=\n|\Z)|\Z)",
    re.MULTILINE | re.DOTALL,
)
_INLINE_CODE = re.compile(r"(`+)[^\n]*?\1")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_AUTOLINK = re.compile(r"<((?:https?|ftp)://[^\s>]+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+)>")
_BLOCK_TAG = re.compile(
    r"</?(?:p|div|br|hr|li|ul|ol|h[1-6]|tr|table|blockquote|pre|section|article)\b[^>]*>",
    re.IGNORECASE,
)
_INLINE_TAG = re.compile(r"</?[A-Za-z][\w-]*(?:\s[^<>]*)?/?>")
# Bracketed texts exclude "[" so a run of brackets cannot make the search quadratic.
_IMAGE = re.compile(r"!\[[^\[\]\n]*\]\([^)\n]*\)")
_LINK = re.compile(r"\[([^\[\]\n]+)\](?:\([^)\n]*\)|\[[^\]\n]*\])")
# Emphasis markers touching a word on one side only; "snake_case" and "2 * 3" keep theirs.
_EMPHASIS = re.compile(
    r"(?=[*_~])(?:(?<![^\s(\[\"'])(?:\*+|_+|~~)(?=[^\s*_~])"
    r"|(?<=[^\s*_~])(?:\*+|_+|~~)(?![^\s)\]\"'.,;:!?]))"
)

_LINK_DEFINITION = re.compile(r"[ \t]{0,3}\[[^\]]+\]:[ \t]*\S+.*")
_RULE = re.compile(r"[ \t]*([-*_=])(?:[ \t]*\1){2,}[ \t]*")
_TABLE_DIVIDER = re.compile(r"[ \t]*\|?(?:[ \t]*:?-+:?[ \t]*\|?)+[ \t]*")
_QUOTE_MARKERS = re.compile(r"[ \t]*(?:>[ \t]?)+")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}(?:[ \t]+|$)(.*?)[ \t#]*")
_LIST_MARKER = re.compile(r"[ \t]*(?:[-*+\u2022]|\d{1,3}[.)])[ \t]+")
_TERMINATED = re.compile(r"[.!?:\u2026][\"')\]]*$")

# Emoji are "other symbols" plus the invisible glue of emoji sequences; a few symbols in that
# category are words the later steps say, so they stay.
_PICTOGRAPH_CATEGORIES = frozenset({"So", "Cs", "Co", "Cn"})
_EMOJI_GLUE = frozenset("\u200d\ufe0e\ufe0f\u20e3")
_SPOKEN_SYMBOLS = frozenset("\u00b0\u2116")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _drop_pictograph(match: re.Match[str]) -> str:
    character = match[0]
    if character in _SPOKEN_SYMBOLS:
        return character
    code = ord(character)
    if (
        character in _EMOJI_GLUE
        or unicodedata.category(character) in _PICTOGRAPH_CATEGORIES
        or 0x1F3FB <= code <= 0x1F3FF  # skin tones
        or 0xE0020 <= code <= 0xE007F  # tag characters of flag sequences
    ):
        return ""
    return character


def _remove_pictographs(text: str) -> str:
    """Emoji (with their modifiers and joiners) and other pictographic symbols removed."""
    return _NON_ASCII.sub(_drop_pictograph, text) if not text.isascii() else text


def _as_sentence(content: str) -> str:
    """A heading, list item or table row, ended with a full stop unless it has its own."""
    content = content.strip()
    if not content or _TERMINATED.search(content):
        return content
    if content[-1] in ",;":
        content = content[:-1]
    return content + "."


def _speakable_line(line: str) -> str | None:
    """The line as prose, or ``None`` for a line that only draws (rules, table dividers)."""
    if _RULE.fullmatch(line) or _LINK_DEFINITION.fullmatch(line):
        return None
    if "|" in line:
        if _TABLE_DIVIDER.fullmatch(line):
            return None
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        return _as_sentence(", ".join(cell for cell in cells if cell))
    if quote := _QUOTE_MARKERS.match(line):
        line = line[quote.end() :]
    if heading := _HEADING.fullmatch(line):
        return _as_sentence(heading[1])
    if item := _LIST_MARKER.match(line):
        return _as_sentence(line[item.end() :])
    return line


def strip_markup(text: str) -> str:
    """Text with Markdown/HTML syntax, code and emoji removed; link texts kept, images dropped."""
    text = _FENCED_CODE.sub("", text)
    text = _INLINE_CODE.sub("", text)
    if "<" in text:
        text = _HTML_COMMENT.sub("", text)
        text = _AUTOLINK.sub(r"\1", text)
        text = _BLOCK_TAG.sub("\n", text)
        text = _INLINE_TAG.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    text = _IMAGE.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EMPHASIS.sub("", text)
    text = _remove_pictographs(text)
    lines = (_speakable_line(line) for line in text.split("\n"))
    return "\n".join(line for line in lines if line is not None)
