"""Sentence splitting, for whole texts and for text that arrives piece by piece.

One scanner serves both. It walks the possible sentence ends (terminal punctuation, line breaks)
in order and judges each from the sentence so far and a bounded look ahead: the whitespace after
the punctuation and the first character after that. When the text may still grow, a judgement
that needs look ahead not yet received is *unsettled*: the scan stops there, and everything
before that point is final. That is what makes :class:`SentenceBuffer` give exactly the
sentences :func:`split_sentences` gives for the whole text, however the text was cut up.
"""

from __future__ import annotations

import re
from enum import Enum, auto

from voxserve.text.abbreviations import MAY_END_SENTENCE, NEVER_END_SENTENCE

_CANDIDATE = re.compile(
    # Western terminators need whitespace after them ("3.14", "example.com" are not ends);
    # " . . ." is one spaced ellipsis.
    r"(?P<terminator>(?<=\s)\.(?:[ \t]+\.)+(?=\s|$)|[.!?\u2026]+)"
    r"(?P<closers>[\"'\u201d\u2019\u00bb)\]]*)"
    # CJK and other scripts' terminators end a sentence with no space after them.
    r"|(?P<script_terminator>[\u3002\uff01\uff1f\uff61\u0964\u0965\u06d4\u061f\u1362\u104b]+)"
    r"[\u300d\u300f\u201d\u2019\uff09)\]]*"
    r"|\n"
)
_WHITESPACE = re.compile(r"\s*")
_CLAUSE_MARK = re.compile(r"[,;:](?=\s)")  # not "1,000" or "9:30"
_QUOTES = frozenset("\"'\u201d\u2019\u00bb")
_OPENERS = "\"'\u201c\u2018([{\u00ab"
_INITIALISM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_LIST_ITEM = re.compile(r"(?:[-*+\u2022]|\d{1,3}[.)])[ \t]")
_LIST_ITEM_PREFIX = re.compile(r"[-*+\u2022]|\d{1,3}[.)]?")


class _Ending(Enum):
    """How a ``.``/``!``/``?`` followed by whitespace is judged."""

    ALWAYS = auto()
    """Ends the sentence: an ordinary word, a number, a question or an exclamation."""
    NEVER = auto()
    """Never ends it: "Dr.", "e.g.", an initial ("J."), a list number opening the sentence."""
    BEFORE_CAPITAL = auto()
    """Ends it when a capital letter or a line break follows: "etc.", "U.S." (or "U S." as
    normalization spells it), an ellipsis."""
    BEFORE_NON_LOWERCASE = auto()
    """Ends it unless a lower-case letter follows: a quotation closing ('"Stop!" he said')."""


def _token_start(text: str, end: int, sentence_start: int) -> int:
    """Where the word that ends at ``end`` begins (never before the sentence does)."""
    start = end
    while start > sentence_start and not text[start - 1].isspace():
        start -= 1
    return start


def _is_capital_letter(token: str) -> bool:
    return len(token) == 1 and token.isupper()


def _classify(text: str, match: re.Match[str], sentence_start: int) -> _Ending:
    terminator = match["terminator"]
    if _QUOTES.intersection(match["closers"]):
        return _Ending.BEFORE_NON_LOWERCASE
    if "!" in terminator or "?" in terminator:
        return _Ending.ALWAYS
    if terminator != ".":
        return _Ending.BEFORE_CAPITAL  # an ellipsis: "Wait... what?" is one sentence
    start = _token_start(text, match.start(), sentence_start)
    token = text[start : match.start()].lstrip(_OPENERS)
    lowered = token.lower()
    before = text[sentence_start:start].rstrip()
    if _is_capital_letter(token):
        # "J. R. R. Tolkien": initials. "the U S." (normalized "U.S."): a spelled abbreviation.
        previous = before[_token_start(before, len(before), 0) :]
        return _Ending.BEFORE_CAPITAL if _is_capital_letter(previous) else _Ending.NEVER
    if lowered in NEVER_END_SENTENCE or (not before and token.isdigit() and len(token) <= 3):
        return _Ending.NEVER  # the digits: a numbered list item, "1. Buy milk"
    if lowered in MAY_END_SENTENCE or _INITIALISM.fullmatch(token):
        return _Ending.BEFORE_CAPITAL
    return _Ending.ALWAYS


def _starts_list_item(text: str, position: int, final: bool) -> bool | None:
    """Whether a list item starts at ``position``; ``None`` while too little text has arrived."""
    if _LIST_ITEM.match(text, position):
        return True
    if not final and _LIST_ITEM_PREFIX.fullmatch(text, position):
        return None
    return False


# The judges answer True (a sentence ends here), False (it does not), or None: undecided until
# more text arrives (only when not ``final``).


def _judge_terminator(
    text: str, match: re.Match[str], sentence_start: int, final: bool
) -> bool | None:
    end = match.end()
    if end == len(text):
        return False if final else None  # at the very end there is nothing to split off
    if not text[end].isspace():
        return False
    after = _WHITESPACE.match(text, end).end()
    line_ends = "\n" in text[end:after]
    standalone = match.start() > 0 and text[match.start() - 1].isspace()
    if standalone and after == len(text) and not final and not line_ends:
        return None  # a dot standing alone may be the start of " . . ."
    ending = _classify(text, match, sentence_start)
    if ending is _Ending.ALWAYS or ending is _Ending.NEVER:
        return ending is _Ending.ALWAYS
    if line_ends:
        return True  # the line ends with terminal punctuation
    if after == len(text):
        return False if final else None
    following = text[after]
    if ending is _Ending.BEFORE_CAPITAL:
        return following.isupper()
    return not following.islower()


def _judge_line_break(text: str, start: int, sentence_start: int, final: bool) -> bool | None:
    if not text[sentence_start:start].strip():
        return False
    after = _WHITESPACE.match(text, start).end()
    if text.count("\n", start, after) > 1:
        return True  # a blank line: a new paragraph
    if after == len(text):
        return False if final else None
    return _starts_list_item(text, after, final)


def _scan(text: str, resume_at: int, final: bool) -> tuple[list[str], int, int]:
    """Sentences found in ``text``; where the last of them ended (the rest is kept, with the
    whitespace before it, which the look-behind for " . . ." may need); and where the next scan
    must resume (the first unsettled judgement, or the end).

    Judgements before ``resume_at`` found no sentence end; the current sentence begins at 0.
    With ``final``, the text is complete: nothing is unsettled and the rest is the last sentence.
    """
    sentences: list[str] = []
    sentence_start = last_end = 0
    position = resume_at
    while match := _CANDIDATE.search(text, position):
        if match["terminator"] is not None:
            ends = _judge_terminator(text, match, sentence_start, final)
            sentence_end = match.end()
        elif match["script_terminator"] is not None:
            ends = None if match.end() == len(text) and not final else True
            sentence_end = match.end()
        else:
            ends = _judge_line_break(text, match.start(), sentence_start, final)
            sentence_end = match.start()
        if ends is None:
            return sentences, last_end, match.start()
        if ends:
            _append(sentences, text[sentence_start:sentence_end])
            last_end = sentence_end
            sentence_start = position = _WHITESPACE.match(text, sentence_end).end()
        else:
            position = match.end()
    if final:
        _append(sentences, text[sentence_start:])
        last_end = len(text)
    return sentences, last_end, len(text)


def _append(sentences: list[str], sentence: str) -> None:
    words = sentence.split()
    if words:
        sentences.append(" ".join(words))


def split_sentences(text: str) -> list[str]:
    """``text`` as a list of sentences, each stripped and with its whitespace collapsed.

    Knows abbreviations ("Dr. Smith", "e.g. this", "U.S. law"), initials, numbers, addresses,
    ellipses, quotations, list items and paragraph breaks.
    """
    return _scan(text, 0, final=True)[0]


class SentenceBuffer:
    """Collects streamed text (an LLM's tokens) and hands out each sentence once it is complete.

    A sentence is released as soon as its end is certain: when what follows its terminal
    punctuation can no longer change the verdict. "word. " is complete at once; "Dr. " never
    ends a sentence; "etc. " or "... " waits for the next character (a capital ends the
    sentence); "3." waits for what follows the period ("3.14"). Concatenating the results of
    every :meth:`push` and the final :meth:`flush` gives exactly ``split_sentences(full_text)``.
    """

    def __init__(self) -> None:
        self._pending = ""
        # Where scanning resumes in _pending: every judgement before it is final.
        self._resume_at = 0

    def push(self, text: str) -> list[str]:
        """Add ``text``; return the sentences it completed (often none)."""
        if not text:
            return []
        self._pending += text
        sentences, kept_from, resume_at = _scan(self._pending, self._resume_at, final=False)
        self._pending = self._pending[kept_from:]
        self._resume_at = resume_at - kept_from
        return sentences

    def take_opening_clause(self) -> str | None:
        """Remove and return the text before the first clause mark (", ", "; ", ": ") of the
        sentence being collected, mark included; None when there is none yet.

        For the first words of a streamed reply: "Sure," can be spoken while the rest of its
        sentence is still arriving.
        """
        match = _CLAUSE_MARK.search(self._pending)
        if match is None or not self._pending[: match.start()].strip():
            return None
        clause, self._pending = self._pending[: match.end()], self._pending[match.end() :]
        self._resume_at = max(0, self._resume_at - match.end())
        return clause.strip()

    def flush(self) -> list[str]:
        """Return the rest as sentences, however incomplete, and empty the buffer."""
        sentences = _scan(self._pending, self._resume_at, final=True)[0]
        self._pending = ""
        self._resume_at = 0
        return sentences
