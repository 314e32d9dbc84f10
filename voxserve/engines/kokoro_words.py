"""Word timings from Kokoro's phoneme timings.

Kokoro speaks espeak-ng's phonemes as Piper does, one character a token, words between spaces,
so the text's words are matched to them by ``piper_words.plan_words``; each word then lasts from
its first spoken phoneme's start to its last one's end, as ``kokoro-onnx`` times them (seconds
from the start of the batch's audio, its pauses included), less `SOUND_LEAD`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voxserve.audio.frames import WordTiming
from voxserve.engines.piper_words import PlannedWord

SOUND_LEAD = 3 / 40
"""Seconds (three of Kokoro's 40 frames a second) by which a phoneme's sound leads its predicted
span: Kokoro's own pipeline (``KPipeline.join_timestamps``) starts its timeline that much before
the leading pad ends. Taken here too, the ONNX backend and the torch backend's espeak path time
words as misaki's path does, and closer to where they are heard (bench/kokoro.py: timestamps)."""


def time_words(words: Sequence[PlannedWord], timings: Sequence[Any]) -> tuple[WordTiming, ...]:
    """``words`` of one batch timed by its ``timings`` (``kokoro_onnx``'s ``Timing``: one per
    phoneme of the batch, in order); none when they are not the timings of those phonemes."""
    if not words or words[-1].last >= len(timings):
        return ()
    lead = min(SOUND_LEAD, timings[0].start)  # never before the batch's first sample
    return tuple(
        WordTiming(word.text, timings[word.first].start - lead, timings[word.last].end - lead)
        for word in words
    )
