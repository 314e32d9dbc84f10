"""Resemble's Perth watermark on a stream, by overlap-save.

``PerthImplicitWatermarker.apply_watermark`` takes a whole clip: it resamples to 32 kHz, marks
its STFT magnitudes (64 ms windows) and turns them back into audio, so a piece marked alone has
edges unlike the same stretch inside the clip. ``StreamWatermarker`` marks each new piece
together with ``context`` of the audio before it and holds the last ``context`` of it back until
the next piece (or the end) arrives: every sample sent was marked with that much audio on both
sides, as it would be in the whole clip.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class StreamWatermarker:
    def __init__(self, watermarker: Any, sample_rate: int, context_seconds: float = 0.25):
        self.watermarker, self.sample_rate = watermarker, sample_rate
        self.context = round(context_seconds * sample_rate)
        self._audio = np.zeros(0, dtype=np.float32)
        """Unmarked audio: ``context`` already sent, then what is held back or new."""
        self._sent_in_buffer = 0

    def push(self, samples: np.ndarray, final: bool = False) -> np.ndarray:
        """``samples`` (the next audio of the stream) marked, less what waits for more audio;
        at ``final``, everything still held back."""
        self._audio = np.concatenate([self._audio, samples.astype(np.float32)])
        end = len(self._audio) if final else len(self._audio) - self.context
        if end <= self._sent_in_buffer:
            return np.zeros(0, dtype=np.float32)
        marked = np.asarray(
            self.watermarker.apply_watermark(self._audio, sample_rate=self.sample_rate),
            dtype=np.float32,
        )[: len(self._audio)]
        # Its inverse STFT can end a few samples short: those stay unmarked.
        marked = np.concatenate([marked, self._audio[len(marked) :]])
        out = marked[self._sent_in_buffer : end]
        keep = max(0, end - self.context)  # the context the next piece is marked with
        self._audio, self._sent_in_buffer = self._audio[keep:], end - keep
        return out
