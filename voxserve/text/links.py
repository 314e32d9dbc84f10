"""Web addresses and e-mail addresses read the way people say them."""

from __future__ import annotations

import re

_EMAIL = re.compile(
    r"(?<![\w.+-])([A-Za-z0-9._%+-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})(?![\w-])"
)
_ADDRESS_CHARACTERS = r"[^\s<>\"'()\[\]]"
_URL = re.compile(rf"(?=[hfw])\b(?:(?:https?|ftp)://|www\.){_ADDRESS_CHARACTERS}+")
# Bare domains only with a well-known top-level domain, so "end.Then" or "file.py" stay text.
_TOP_LEVEL_DOMAIN = (
    r"\.(?:com|org|net|edu|gov|io|ai|dev|app|co|uk|us|de|fr|info|me|tv|ly|gg|xyz|tech)"
)
_BARE_DOMAIN = re.compile(
    rf"(?<![\w@.-])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*{_TOP_LEVEL_DOMAIN}(?![\w-])"
    rf"(?:[/?#:]{_ADDRESS_CHARACTERS}*)?"
)
_HAS_TOP_LEVEL_DOMAIN = re.compile(rf"{_TOP_LEVEL_DOMAIN}(?![\w-])")
_SCHEME = re.compile(r"^[a-z]+://(?:www\.)?|^www\.", re.IGNORECASE)
_QUERY_OR_FRAGMENT = re.compile(r"[?#].*")
_TRAILING_PUNCTUATION = re.compile(r"[.,;:!?]+$")
_SEPARATOR = re.compile(r"[./:@_+~=&-]")
_SEPARATOR_WORDS = {
    ".": " dot ", "/": " slash ", ":": " colon ", "@": " at ", "_": " underscore ",
    "+": " plus ", "-": " dash ", "~": " tilde ", "=": " equals ", "&": " and ",
}  # fmt: skip


def _say_separators(address: str) -> str:
    return " ".join(_SEPARATOR.sub(lambda match: _SEPARATOR_WORDS[match[0]], address).split())


def _speak_url(match: re.Match[str]) -> str:
    url = match[0]
    # A sentence's full stop is not part of the address it ends with.
    trailing = _TRAILING_PUNCTUATION.search(url)
    if trailing:
        url = url[: trailing.start()]
    address = _QUERY_OR_FRAGMENT.sub("", _SCHEME.sub("", url)).rstrip("/")
    return _say_separators(address) + (trailing[0] if trailing else "")


def _speak_email(match: re.Match[str]) -> str:
    return f"{_say_separators(match[1])} at {_say_separators(match[2])}"


def speak_links(text: str) -> str:
    """``https://www.example.com/docs`` -> ``example dot com slash docs`` (scheme, ``www``, query
    and fragment dropped); ``jane.doe@example.org`` -> ``jane dot doe at example dot org``."""
    if "@" in text:
        text = _EMAIL.sub(_speak_email, text)
    if "." in text:
        text = _URL.sub(_speak_url, text)
    # Finding a top-level domain first is much faster than trying a domain at every word.
    if _HAS_TOP_LEVEL_DOMAIN.search(text):
        text = _BARE_DOMAIN.sub(_speak_url, text)
    return text
