"""Candidates checked by Whisper: of several takes of one text, the one heard closest to it.

A sampling model now and then skips, repeats or garbles words. With ``candidates`` > 1 the
engine makes that many takes of a segment, each with its own seed; ``choose`` has each
transcribed and keeps the take with the lowest word error rate, or none when even the best is
over the limit (the engine then tries shorter pieces, then its fallback engine). Nothing here
knows Chatterbox: a take is anything ``transcribe`` can hear.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from voxserve.text.sentences import split_sentences

Take = TypeVar("Take")

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # letters and digits, "don't" one word
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Judged(Generic[Take]):
    take: Take
    transcript: str
    wer: float
    """Word error rate of ``transcript`` against the text (0: every word heard)."""


def words(text: str) -> list[str]:
    """The words of ``text`` as they are compared: lower case, punctuation dropped."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / words of ``reference``, by edit distance over
    words; a hypothesis of words for an empty reference counts as 1."""
    expected, heard = words(reference), words(hypothesis)
    if not expected:
        return 0.0 if not heard else 1.0
    previous = list(range(len(heard) + 1))
    for row, word in enumerate(expected, 1):
        current = [row]
        for column, other in enumerate(heard, 1):
            current.append(
                min(previous[column] + 1, current[-1] + 1, previous[column - 1] + (word != other))
            )
        previous = current
    return previous[-1] / len(expected)


def judge(text: str, takes: Iterable[Take], transcribe: Callable[[Take], str]) -> list[Judged]:
    """Every take transcribed and scored against ``text``, best first (ties: the earlier take)."""
    judged = [
        Judged(take, heard, word_error_rate(text, heard))
        for take in takes
        for heard in (transcribe(take),)
    ]
    return sorted(judged, key=lambda item: item.wer)


def choose(
    text: str, takes: Iterable[Take], transcribe: Callable[[Take], str], max_wer: float
) -> Judged | None:
    """The take heard closest to ``text``; None when even that one's WER is over ``max_wer``."""
    judged = judge(text, takes, transcribe)
    return judged[0] if judged and judged[0].wer <= max_wer else None


def shorter_pieces(text: str, min_chars: int) -> list[str]:
    """``text`` in pieces to try again: its sentences, else its halves (cut at the space nearest
    the middle); ``[text]`` when it is too short to cut."""
    sentences = split_sentences(text)
    if len(sentences) > 1:
        return sentences
    spaces = [match.start() for match in _SPACE.finditer(text)]
    if len(text) < 2 * min_chars or not spaces:
        return [text]
    cut = min(spaces, key=lambda position: abs(position - len(text) // 2))
    return [text[:cut].strip(), text[cut:].strip()]
