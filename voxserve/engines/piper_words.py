"""Word timings from Piper's phoneme alignments.

Piper speaks espeak-ng's phonemes, one sentence per audio chunk, and (from a patched voice) tells
how many samples each phoneme lasts. Words are found in two steps:

- ``plan_words``, before synthesis: the text's words are matched to the phoneme words (phonemes
  between spaces) of every sentence. They do not map one to one: espeak runs short words together
  ("from the" is one phoneme word, ``fɹʌmðə``) and says one written word as several ("2021").
  A small dynamic programme picks the grouping whose letters best match the phonemes.
- ``time_words``, for each chunk: the samples before and through each word's phonemes.

Punctuation phonemes are pauses, not words: a word ends with its last spoken phoneme.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from voxserve.audio.frames import WordTiming

WORD_BREAK = " "
MAX_MERGED = 4
"""Most written words espeak runs into one phoneme word ("as a matter of")."""
MAX_SPLIT = 8
"""Most phoneme words one written word becomes ("3/4/2021": three slash four slash two...)."""
SYMBOL_LETTERS = {"$": 5.0, "%": 6.0, "&": 3.0, "/": 4.0, "+": 4.0, "@": 2.0, "#": 6.0, "€": 4.0}
"""About how many letters espeak's word for a symbol is worth."""
GROUPING_COST = 1.0
"""What a grouping other than one to one costs, in phonemes: matches stay one to one unless the
lengths clearly say otherwise."""
_GROUPINGS = [(1, 1), *((a, 1) for a in range(2, MAX_MERGED + 1)),
              *((1, b) for b in range(2, MAX_SPLIT + 1))]  # fmt: skip
"""(written words, phoneme words) in one group."""


@dataclass(frozen=True)
class PlannedWord:
    """A written word and the phonemes that say it, in its sentence's phoneme list."""

    text: str
    first: int
    """Index of its first spoken phoneme."""
    last: int
    """Index of its last spoken phoneme (inclusive)."""


def plan_words(text: str, sentences: Sequence[Sequence[str]]) -> list[list[PlannedWord]]:
    """The words of ``text`` by sentence, for ``sentences`` (the non-empty phoneme lists Piper
    makes of ``text``, one per chunk it yields)."""
    words = written_words(text)
    spoken = [
        (index, phonemes)
        for index, sentence in enumerate(sentences)
        for phonemes in phoneme_words(sentence)
    ]
    planned: list[list[PlannedWord]] = [[] for _ in sentences]
    if not words or not spoken:
        return planned
    sizes = [len(phonemes) for _, phonemes in spoken]
    for word_group, spoken_group in _match(words, sizes, [index for index, _ in spoken]):
        sentence = spoken[spoken_group.start][0]
        if len(word_group) == 1:
            first = spoken[spoken_group.start][1][0]
            last = spoken[spoken_group.stop - 1][1][-1]
            planned[sentence].append(PlannedWord(words[word_group.start], first, last))
        else:  # several words in one phoneme word: its phonemes shared out by their letters
            phonemes = spoken[spoken_group.start][1]
            group = words[word_group.start : word_group.stop]
            cuts = _cuts([_letters(word) for word in group], len(phonemes))
            for word, start, stop in zip(group, cuts, cuts[1:], strict=False):
                planned[sentence].append(PlannedWord(word, phonemes[start], phonemes[stop - 1]))
    return planned


def time_words(
    words: Sequence[PlannedWord], samples: Sequence[int], sample_rate: int
) -> tuple[WordTiming, ...]:
    """``words`` of one sentence timed from the start of its chunk. ``samples`` is Piper's
    alignment: the samples of the sentence start marker, of each phoneme, and of the end marker."""
    ends = list(itertools.accumulate(samples))
    if not words or words[-1].last + 1 >= len(ends):
        return ()  # not the alignment of these phonemes
    return tuple(
        WordTiming(word.text, ends[word.first] / sample_rate, ends[word.last + 1] / sample_rate)
        for word in words
    )


def written_words(text: str) -> list[str]:
    """``text``'s words as written; a token with no letter or digit (a dash) joins the word
    before it, else the one after."""
    words: list[str] = []
    pending = ""
    for token in text.split():
        if _letters(token):
            words.append(f"{pending} {token}".strip())
            pending = ""
        elif words:
            words[-1] = f"{words[-1]} {token}"
        else:
            pending = f"{pending} {token}".strip()
    return words


def phoneme_words(phonemes: Sequence[str]) -> list[list[int]]:
    """The indices of the spoken phonemes of each word in ``phonemes``."""
    words: list[list[int]] = [[]]
    for index, phoneme in enumerate(phonemes):
        if phoneme == WORD_BREAK:
            words.append([])
        elif _spoken(phoneme):
            words[-1].append(index)
    return [word for word in words if word]


def _match(
    words: Sequence[str], sizes: Sequence[int], sentences: Sequence[int]
) -> list[tuple[range, range]]:
    """Words and phoneme words (``sizes`` phonemes each, in ``sentences``) in matching groups
    (one to one, many to one, one to many), in order: the grouping whose letters best match the
    phoneme counts."""
    letters = [max(1.0, _sounds(word)) for word in words]
    scale = sum(sizes) / sum(letters)
    expected = [0.0, *itertools.accumulate(count * scale for count in letters)]
    spoken = [0, *itertools.accumulate(sizes)]
    n, m = len(words), len(sizes)
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    step: list[list[tuple[int, int]]] = [[(0, 0)] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if cost[i][j] == inf:
                continue
            for a, b in _GROUPINGS:
                if i + a > n or j + b > m:
                    continue
                if sentences[j] != sentences[j + b - 1]:
                    continue  # one word is never said across sentences
                size = spoken[j + b] - spoken[j]
                if a > size:
                    continue  # each merged word needs a phoneme of its own
                total = cost[i][j] + abs(expected[i + a] - expected[i] - size)
                total += GROUPING_COST * (a + b - 2)
                if total < cost[i + a][j + b]:
                    cost[i + a][j + b] = total
                    step[i + a][j + b] = (a, b)
    groups: list[tuple[range, range]] = []
    i, j = n, m
    while i or j:
        a, b = step[i][j]
        if not (a or b):
            return []  # no grouping fits: more words than the phonemes can share out
        groups.append((range(i - a, i), range(j - b, j)))
        i, j = i - a, j - b
    return groups[::-1]


def _cuts(weights: Sequence[int], total: int) -> list[int]:
    """``total`` items cut into ``len(weights)`` runs of at least one, sized by ``weights``."""
    bounds = list(itertools.accumulate(max(1, weight) for weight in weights))
    cuts = [0]
    for index, bound in enumerate(bounds[:-1]):
        least = cuts[-1] + 1
        most = total - (len(weights) - index - 1)
        cuts.append(min(most, max(least, round(total * bound / bounds[-1]))))
    cuts.append(total)
    return cuts


def _letters(word: str) -> int:
    return sum(character.isalnum() for character in word)


def _sounds(word: str) -> float:
    """About how many phonemes ``word`` takes, in letters: a digit or a symbol is said as a
    word ("four", "dollar")."""
    return sum(
        1.0
        if character.isalpha()
        else 3.0
        if character.isdigit()
        else SYMBOL_LETTERS.get(character, 0.0)
        for character in word
    )


def _spoken(phoneme: str) -> bool:
    # Punctuation is a pause; stress and length marks are part of the sounds around them.
    return not unicodedata.category(phoneme[:1]).startswith("P")
