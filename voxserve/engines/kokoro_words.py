"""Word timings from Kokoro's phoneme timings.

Kokoro speaks espeak-ng's phonemes as Piper does, one character a token, words between spaces,
so the text's words are matched to them by ``piper_words.plan_words``; each word then lasts from
its first spoken phoneme's start to its last one's end, as ``kokoro-onnx`` times them (seconds
from the start of the batch's audio, its pauses included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voxserve.audio.frames import WordTiming
from voxserve.engines.piper_words import PlannedWord


def time_words(words: Sequence[PlannedWord], timings: Sequence[Any]) -> tuple[WordTiming, ...]:
    """``words`` of one batch timed by its ``timings`` (``kokoro_onnx``'s ``Timing``: one per
    phoneme of the batch, in order); none when they are not the timings of those phonemes."""
    if not words or words[-1].last >= len(timings):
        return ()
    return tuple(
        WordTiming(word.text, timings[word.first].start, timings[word.last].end) for word in words
    )
