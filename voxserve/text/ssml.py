"""The SSML subset voxserve speaks, parsed into a flat list of what to say and where to pause.

Supported, and nothing else (an unknown element or attribute is a 400 naming it and where it
is, never dropped):

- ``<speak>`` the root (``version``, ``xmlns``, ``xmlns:*``, ``xml:lang`` allowed; the language
  must be the voice's own, checked when planned).
- ``<p>``, ``<s>``: a paragraph ends with a ``strong`` pause, a sentence with the configured
  sentence pause.
- ``<break time="500ms"|"1.5s" strength="...">``: ``time`` wins over ``strength``; strengths are
  ``STRENGTHS`` seconds; a bare ``<break/>`` is ``medium``; at most ``MAX_PAUSE_SECONDS``.
- ``<prosody rate="...">``: ``RATES`` or a percentage ("80%" of the speed, "+20%" faster,
  "-20%" slower); nested rates multiply, and multiply the request's speed.
- ``<say-as interpret-as="...">``: ``say_as.KINDS``; ``format`` for dates (``mdy``...).
- ``<sub alias="...">``: the alias is spoken instead of the text.
- ``<emphasis level="...">``: only on engines that declare ``Capabilities.emphasis`` (none yet).
- ``<voice name="...">``: another voice, found as a dialogue speaker's is.

The document is read by the standard library's expat parser with every declaration refused: a
DOCTYPE (and with it any entity, internal or external) is a 400 before it is read, so neither
"billion laughs" nor an external entity can be expanded; an undeclared entity is expat's own
error. Malformed XML is a 400 that says where: "line 3, column 12: mismatched tag" (columns
count from 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from xml.parsers import expat

from voxserve.errors import InvalidRequestError
from voxserve.text.pauses import MAX_PAUSE_SECONDS, parse_duration
from voxserve.text.say_as import DATE_FORMATS, KINDS

STRENGTHS = {
    "none": 0.0, "x-weak": 0.1, "weak": 0.25, "medium": 0.4, "strong": 0.75, "x-strong": 1.25,
}  # fmt: skip
"""Seconds of a ``<break strength>``."""
RATES = {"x-slow": 0.5, "slow": 0.75, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.75}
"""Speed multipliers of ``<prosody rate>``."""
EMPHASIS_LEVELS = ("strong", "moderate", "none", "reduced")
PARAGRAPH_PAUSE = STRENGTHS["strong"]

_ATTRIBUTES: dict[str, frozenset[str]] = {
    "speak": frozenset({"version", "xmlns", "xml:lang"}),
    "p": frozenset(),
    "s": frozenset(),
    "break": frozenset({"time", "strength"}),
    "prosody": frozenset({"rate"}),
    "say-as": frozenset({"interpret-as", "format"}),
    "sub": frozenset({"alias"}),
    "emphasis": frozenset({"level"}),
    "voice": frozenset({"name"}),
}
_UNSUPPORTED_PROSODY = ("pitch", "volume", "duration", "contour", "range")
_PERCENT = re.compile(r"([+-]?)(\d+(?:\.\d+)?)%")
_LEAF = ("say-as", "sub")  # their text is read whole: no element inside


def looks_like_ssml(text: str) -> bool:
    """Whether ``text`` is an SSML document: it opens with ``<speak`` (after whitespace)."""
    return re.match(r"\s*<speak[\s>/]", text) is not None


@dataclass(frozen=True)
class Words:
    """Text to speak, and how."""

    text: str
    where: str
    """Where the element it is in starts ("line 2, column 7"), for errors found when planned."""
    voice: str | None = None
    """The ``<voice name>`` it is in; None: the request's voice."""
    rate: float = 1.0
    """The product of the ``<prosody rate>`` it is in."""
    interpret_as: str | None = None
    """A ``say-as`` kind; None: running text, normalized as usual."""
    date_format: str | None = None
    emphasis: str | None = None
    """The level of the ``<emphasis>`` it is in."""


@dataclass(frozen=True)
class Break:
    """A pause: a ``<break>`` (``explicit``), or the end of an ``<s>`` or ``<p>``."""

    seconds: float | None
    """None: the configured sentence pause (the end of an ``<s>``)."""
    explicit: bool


@dataclass(frozen=True)
class SsmlDocument:
    items: list[Words | Break]
    language: str | None
    """The root's ``xml:lang``."""

    @property
    def text(self) -> str:
        """The words, for detecting the language."""
        return " ".join(item.text for item in self.items if isinstance(item, Words))


@dataclass
class _Scope:
    """What an open element passes to the text inside it."""

    tag: str
    words: Words
    alias: str | None = None
    collected: list[str] = field(default_factory=list)


def parse_ssml(document: str) -> SsmlDocument:
    """``document`` as its items; a malformed or unsupported one raises InvalidRequestError
    (param ``input``) saying what and where."""
    return _Reader(document).read()


def refuse(where: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"SSML {where}: {message}", param="input", code="invalid_ssml")


class _Reader:
    def __init__(self, document: str):
        self.document = document
        self.parser = expat.ParserCreate()
        self.parser.buffer_text = True  # a text's pieces (split at lines, entities) come as one
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._text
        self.parser.StartDoctypeDeclHandler = self._declaration
        self.parser.EntityDeclHandler = self._declaration
        self.parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        self.scopes: list[_Scope] = []
        self.items: list[Words | Break] = []
        self.language: str | None = None

    def read(self) -> SsmlDocument:
        try:
            self.parser.Parse(self.document, True)
        except expat.ExpatError as error:
            where = f"line {error.lineno}, column {error.offset + 1}"
            raise refuse(where, expat.ErrorString(error.code)) from None
        return SsmlDocument(self.items, self.language)

    @property
    def where(self) -> str:
        return f"line {self.parser.CurrentLineNumber}, column {self.parser.CurrentColumnNumber + 1}"

    def _declaration(self, *_: object) -> None:
        raise refuse(self.where, "a DOCTYPE or entity declaration is not accepted")

    def _start(self, tag: str, attributes: dict[str, str]) -> None:
        where = self.where
        if not self.scopes and tag != "speak":
            raise refuse(where, f"the root element must be <speak>, not <{tag}>")
        if self.scopes and tag == "speak":
            raise refuse(where, "<speak> is only the root element")
        if tag not in _ATTRIBUTES:
            raise refuse(where, f"unknown or unsupported element <{tag}>")
        if self.scopes and self.scopes[-1].tag in _LEAF:
            raise refuse(where, f"<{self.scopes[-1].tag}> holds text only, not <{tag}>")
        self._check_attributes(tag, attributes, where)
        outer = self.scopes[-1].words if self.scopes else Words("", where)
        self._flush()
        scope = _Scope(tag, replace(outer, where=where))
        self._opened(scope, attributes, where)
        self.scopes.append(scope)

    def _check_attributes(self, tag: str, attributes: dict[str, str], where: str) -> None:
        for name in attributes:
            if name in _ATTRIBUTES[tag] or (tag == "speak" and name.startswith("xmlns:")):
                continue
            if tag == "prosody" and name in _UNSUPPORTED_PROSODY:
                raise refuse(where, f"<prosody {name}> is not supported (only rate)")
            raise refuse(where, f"unknown or unsupported attribute {name!r} of <{tag}>")

    def _opened(self, scope: _Scope, attributes: dict[str, str], where: str) -> None:
        """What the element's attributes pass on to what it holds."""
        tag, words = scope.tag, scope.words
        if tag == "speak":
            self.language = attributes.get("xml:lang") or None
        elif tag == "break":
            self.items.append(Break(_break_seconds(attributes, where), explicit=True))
        elif tag == "prosody":
            rate = _rate(attributes.get("rate", "medium"), where)
            scope.words = replace(words, rate=words.rate * rate)
        elif tag == "say-as":
            kind = attributes.get("interpret-as")
            if kind not in KINDS:
                raise refuse(
                    where, f"<say-as interpret-as={kind!r}>: use one of {', '.join(KINDS)}"
                )
            date_format = attributes.get("format")
            if date_format is not None and (kind != "date" or date_format not in DATE_FORMATS):
                raise refuse(
                    where, f"<say-as format={date_format!r}> is only for dates: "
                    f"{', '.join(DATE_FORMATS)}",
                )  # fmt: skip
            scope.words = replace(words, interpret_as=kind, date_format=date_format)
        elif tag == "sub":
            if "alias" not in attributes:
                raise refuse(where, "<sub> needs an alias")
            scope.alias = attributes["alias"]
        elif tag == "emphasis":
            level = attributes.get("level", "moderate")
            if level not in EMPHASIS_LEVELS:
                raise refuse(where, f"<emphasis level={level!r}>: use one of "
                             f"{', '.join(EMPHASIS_LEVELS)}")  # fmt: skip
            scope.words = replace(words, emphasis=level)
        elif tag == "voice":
            name = attributes.get("name", "").strip()
            if not name:
                raise refuse(where, "<voice> needs a name")
            scope.words = replace(words, voice=name)

    def _end(self, tag: str) -> None:
        scope = self.scopes.pop()
        if tag in _LEAF:
            written = "".join(scope.collected)
            text = scope.alias if scope.alias is not None else written
            if text.strip():
                self.items.append(replace(scope.words, text=text))
            return
        self._flush(scope)
        if tag == "s":
            self.items.append(Break(None, explicit=False))
        elif tag == "p":
            self.items.append(Break(PARAGRAPH_PAUSE, explicit=False))

    def _text(self, text: str) -> None:
        scope = self.scopes[-1]
        if scope.tag == "break" and text.strip():
            raise refuse(self.where, "<break> holds no text")
        scope.collected.append(text)

    def _flush(self, scope: _Scope | None = None) -> None:
        """The text written so far in the innermost open element, as one item."""
        scope = scope or (self.scopes[-1] if self.scopes else None)
        if scope is None or scope.tag in _LEAF or not scope.collected:
            return
        text = "".join(scope.collected)
        scope.collected.clear()
        if text.strip():
            self.items.append(replace(scope.words, text=text))


def _break_seconds(attributes: dict[str, str], where: str) -> float:
    if "time" in attributes:
        return parse_duration(attributes["time"], "input", f"SSML {where}: <break time>")
    strength = attributes.get("strength", "medium")
    if strength not in STRENGTHS:
        raise refuse(where, f"<break strength={strength!r}>: use one of {', '.join(STRENGTHS)}")
    return STRENGTHS[strength]


def _rate(written: str, where: str) -> float:
    written = written.strip().lower()
    if written in RATES:
        return RATES[written]
    match = _PERCENT.fullmatch(written)
    if match is None:
        raise refuse(
            where, f"<prosody rate={written!r}>: use {', '.join(RATES)} or a percentage (80%, +20%)"
        )
    # "80%" is a share of the speed; "+20%" and "-20%" change it by that much.
    share = float(match[2]) / 100
    rate = {"+": 1 + share, "-": 1 - share}.get(match[1], share)
    if rate <= 0:
        raise refuse(where, f"<prosody rate={written!r}> leaves no speed")
    return rate


__all__ = [
    "MAX_PAUSE_SECONDS",
    "RATES",
    "STRENGTHS",
    "Break",
    "SsmlDocument",
    "Words",
    "looks_like_ssml",
    "parse_ssml",
]
