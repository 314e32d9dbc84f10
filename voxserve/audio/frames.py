"""The unit of audio that flows from engines to encoders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AudioChunk:
    """A piece of mono audio."""

    samples: np.ndarray
    """Float32 samples in [-1, 1], shape (n,)."""

    sample_rate: int
    """Samples per second."""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate
