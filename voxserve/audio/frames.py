"""The unit of audio that flows from engines to encoders, and the words spoken in it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WordTiming:
    """One word and when it is heard, in seconds.

    From an engine: from the start of the chunk that carries it. From the synthesizer (what every
    transport sees): from the start of the stream, after pauses, fades and resampling.
    """

    text: str
    start: float
    end: float

    def shifted(self, seconds: float) -> WordTiming:
        return WordTiming(self.text, self.start + seconds, self.end + seconds)

    def to_dict(self) -> dict:
        return {"word": self.text, "start": round(self.start, 3), "end": round(self.end, 3)}


@dataclass(frozen=True)
class AudioChunk:
    """A piece of mono audio, and the words it speaks where the engine knows them."""

    samples: np.ndarray
    """Float32 samples in [-1, 1], shape (n,)."""

    sample_rate: int
    """Samples per second."""

    words: tuple[WordTiming, ...] = ()
    """Words whose audio starts in this chunk (engines that declare ``word_timings``)."""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate
