"""Sentences cut into pieces an engine accepts, and the plan of pieces for a whole text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from voxserve.text.sentences import split_sentences


@dataclass(frozen=True)
class Fragment:
    """One piece of text to synthesize in one go."""

    text: str
    """The words, stripped; never empty."""

    ends_sentence: bool
    """Whether the piece ends its sentence (a longer pause follows) or breaks off mid-sentence."""


# The whitespace after a clause: after , ; : or after a dash standing alone (" — ", " - ").
_CLAUSE_BREAK = re.compile(r"(?<=[,;:])\s+|(?<=\s[\u2014\u2013-])\s+")
_BEFORE_CONJUNCTION = re.compile(
    r"\s+(?=(?:and|but|or|nor|so|yet|because|although|though|while|whereas|which|who|whose"
    r"|where|when|if|unless|until|since|that)\b)"
)
_WORD_BREAK = re.compile(r"\s+")
# Coarsest first: a long sentence is cut where a reader would pause, words only as a last resort.
_BREAKS_BY_PREFERENCE = (_CLAUSE_BREAK, _BEFORE_CONJUNCTION, _WORD_BREAK)


def _packed(parts: list[str], max_chars: int) -> list[str]:
    """Neighbouring parts joined (with a space) as long as the result still fits."""
    pieces: list[str] = []
    for part in parts:
        if pieces and len(pieces[-1]) + 1 + len(part) <= max_chars:
            pieces[-1] = f"{pieces[-1]} {part}"
        else:
            pieces.append(part)
    return pieces


def _fit(text: str, max_chars: int, breaks: Sequence[re.Pattern[str]]) -> list[str]:
    if len(text) <= max_chars:
        return [text]
    if not breaks:  # a single token longer than the limit
        return [text[start : start + max_chars] for start in range(0, len(text), max_chars)]
    parts = [part for part in breaks[0].split(text) if part]
    pieces: list[str] = []
    for piece in _packed(parts, max_chars):
        pieces.extend(_fit(piece, max_chars, breaks[1:]))
    return pieces


def chunk_sentence(sentence: str, max_chars: int) -> list[str]:
    """``sentence`` cut into pieces of at most ``max_chars`` characters: at clause boundaries,
    then before conjunctions, then between words, and only a single overlong token is cut
    inside. Pieces are stripped and non-empty, and keep every word in order."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    sentence = sentence.strip()
    return _fit(sentence, max_chars, _BREAKS_BY_PREFERENCE) if sentence else []


def _split_first_clause(piece: str, min_words: int) -> list[str]:
    boundary = _CLAUSE_BREAK.search(piece)
    if boundary is None:
        return [piece]
    head, rest = piece[: boundary.start()], piece[boundary.end() :]
    return [head, rest] if rest and len(head.split()) >= min_words else [piece]


def plan_fragments(
    text: str, max_chars: int, *, small_first: bool = True, first_min_words: int = 2
) -> list[Fragment]:
    """Split already-normalized ``text`` into sentences, and sentences into fragments of at most
    ``max_chars`` characters.

    With ``small_first``, the first sentence is also cut after its first clause (when that clause
    has at least ``first_min_words`` words), so the first audio is ready sooner.
    """
    fragments: list[Fragment] = []
    for index, sentence in enumerate(split_sentences(text)):
        pieces = chunk_sentence(sentence, max_chars)
        if index == 0 and small_first:
            pieces[:1] = _split_first_clause(pieces[0], first_min_words)
        fragments.extend(
            Fragment(piece, ends_sentence=position == len(pieces) - 1)
            for position, piece in enumerate(pieces)
        )
    return fragments
