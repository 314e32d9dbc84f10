"""Higgs Audio V2 codes to audio, as they are generated.

The model emits one column of codes per step in a *delay pattern*: codebook k runs k steps behind
codebook 0, so frame t is complete once column t + codebooks - 1 is out. ``DelayPatternUndoer``
turns columns into frames as soon as each is complete, and notices the end of the stream.

The codec's decoder is not causal: a frame's samples depend on about 5 frames either side
(measured on the published architecture: 6 frames of context on each side bring a window to within
1e-6 of decoding everything at once, 4 to within 1e-3, none to a click at every join).
``WindowedDecoder`` therefore decodes windows of frames with frames of left context and of
look-ahead around them, keeps only the window's own samples, and crossfades each join over a few
milliseconds with what the previous window decoded past its end. The first window is smaller, so
that audio starts sooner.

``SilenceTrimmer`` drops a segment's leading silence and holds back quiet samples until louder
ones follow, so its trailing silence is dropped without holding up anything else.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


class DelayPatternUndoer:
    """Generated columns in, complete frames out."""

    def __init__(self, codebooks: int, stream_bos: int, stream_eos: int):
        self.codebooks = codebooks
        self.stream_bos = stream_bos
        self.stream_eos = stream_eos
        self.ended = False
        """The stream's end code has been seen in codebook 0: no frame follows."""
        self._columns: list[torch.Tensor] = []
        self._started = False

    def push(self, column: torch.Tensor) -> list[torch.Tensor]:
        """Take the next column (shape (codebooks,)); return the frames it completes."""
        if self.ended:
            return []
        if not self._started:
            # Generation opens with a column of stream-begin codes; data starts after it.
            if int(column[0]) == self.stream_bos:
                return []
            self._started = True
        self._columns.append(column)
        frame_index = len(self._columns) - self.codebooks
        if frame_index < 0:
            return []
        if int(self._columns[frame_index][0]) == self.stream_eos:
            self.ended = True
            return []
        frame = torch.stack([self._columns[frame_index + k][k] for k in range(self.codebooks)])
        return [frame]


class WindowedDecoder:
    """Frames in, samples out: windows decoded with context on both sides, joins crossfaded."""

    def __init__(
        self,
        decode: Callable[[torch.Tensor], np.ndarray],
        samples_per_frame: int,
        *,
        window: int,
        first_window: int,
        context: int,
        crossfade: int,
        lookahead: int | None = None,
    ):
        """``decode`` takes frames (codebooks x n) and returns n * samples_per_frame samples;
        ``lookahead``: frames decoded past each window (None: ``context``; 0 for a causal decoder,
        whose samples never depend on later frames); ``crossfade`` is in samples, at most
        ``lookahead`` frames' worth."""
        lookahead = context if lookahead is None else lookahead
        if min(window, first_window) < 1 or min(context, lookahead) < 0:
            raise ValueError("windows need at least one frame, and context cannot be negative")
        self.decode = decode
        self.samples_per_frame = samples_per_frame
        self.window = window
        self.first_window = first_window
        self.context = context
        self.lookahead = lookahead
        self.crossfade = min(crossfade, lookahead * samples_per_frame)
        self.frames: list[torch.Tensor] = []
        self._done = 0  # frames whose samples have been returned
        self._overhang = np.zeros(0, np.float32)  # the last window's decoding past its end

    def push(self, frame: torch.Tensor) -> np.ndarray | None:
        """Add a frame (shape (codebooks,)); samples when a window is ready, else None."""
        self.frames.append(frame)
        size = self.window if self._done else self.first_window
        if len(self.frames) < self._done + size + self.lookahead:
            return None
        return self._emit(self._done + size, self._done + size + self.lookahead)

    def finish(self) -> np.ndarray:
        """The samples of the frames not yet returned."""
        if self._done == len(self.frames):
            return np.zeros(0, np.float32)
        return self._emit(len(self.frames), len(self.frames))

    def _emit(self, end: int, decode_end: int) -> np.ndarray:
        start = max(0, self._done - self.context)
        audio = self.decode(torch.stack(self.frames[start:decode_end], dim=1))
        spf = self.samples_per_frame
        own = audio[(self._done - start) * spf : (end - start) * spf].copy()
        joined = min(len(self._overhang), len(own))
        if joined:
            fade_in = (np.arange(joined, dtype=np.float32) + 0.5) / joined
            own[:joined] = own[:joined] * fade_in + self._overhang[:joined] * (1 - fade_in)
        self._overhang = audio[(end - start) * spf : (end - start) * spf + self.crossfade]
        self._done = end
        return own


class SilenceTrimmer:
    """Drops leading silence, and holds back a quiet tail until something louder follows.

    Leading silence is dropped rather than held, so that a quiet first window never waits for the
    next one: the synthesizer puts its own pauses between segments.
    """

    def __init__(self, sample_rate: int, threshold_dbfs: float = -50.0, block_ms: float = 10.0):
        self.threshold = 10 ** (threshold_dbfs / 20)
        self.block = max(1, round(sample_rate * block_ms / 1000))
        self._held = np.zeros(0, np.float32)
        self._heard = False

    def process(self, samples: np.ndarray) -> np.ndarray:
        """What can be sent now: up to the end of the last loud block."""
        pending = np.concatenate([self._held, samples])
        loud = np.flatnonzero(np.abs(pending) >= self.threshold)
        if len(loud) == 0:
            self._held = pending if self._heard else np.zeros(0, np.float32)
            return np.zeros(0, np.float32)
        start = 0 if self._heard else loud[0] // self.block * self.block
        self._heard = True
        cut = min(len(pending), (loud[-1] // self.block + 1) * self.block)
        self._held = pending[cut:]
        return pending[start:cut]

    def finish(self) -> None:
        """The end: what is still held is trailing silence, and is dropped."""
        self._held = np.zeros(0, np.float32)
