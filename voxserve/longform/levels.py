"""A chapter measured once for its loudness, then brought to the target through the true-peak
limiter without running the chapter through the limiter and the meter again for each gain tried.

Why: speech lifted to -16 LUFS has its peaks past the ceiling, and the limiter takes back part
of each decibel added, so the gain is searched for (three tries, as a rule). Done on the audio,
each try was a limiter pass and a meter pass, and the search a tenth of a book's time. Here the
chapter is read once, keeping per 32-sample frame (the limiter's step) its largest sample and its
K-weighted energy. At a gain, the limiter's gain of each frame follows from the frames' true
peaks (``audio/limiter``: the same rule, on the same numbers), and the loudness as heard from
the frames' energies at that gain: computed on frames, a try takes milliseconds. True peaks are
oversampled only for the frames a gain tried brings within 6 dB of the ceiling, and kept.

The estimate treats the limiter's gain as constant over a frame and the K-weighting as acting
within one (its filters settle in a few milliseconds, the gain moves over 20): the chapter it
writes measures within a few hundredths of a LU of the estimate (tests/longform).

The chapter's samples are a 16-bit file beside its pieces, read through a memory map, so the
memory a chapter holds is its frames' numbers: 9 bytes a frame, about 22 MB for an hour.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from voxserve.audio.limiter import (
    CANDIDATE_MARGIN,
    CEILING_DBTP,
    FRAME,
    frame_true_peaks,
    half_window,
    sample_gains,
    smoothed_gains,
)
from voxserve.longform.loudness import MAX_GAIN_DB, KWeighting, gain_db_to, gated_lufs, step_samples

LOUDNESS_TOLERANCE = 0.25
"""LU either side of the target."""
MAX_LOUDNESS_TRIES = 4
_READ = 1 << 16
"""Samples read at a time (a multiple of FRAME): small, so that the work arrays are too (the
allocator keeps large ones it frees for reuse, and the server's memory rose in steps)."""


class ChapterLevels:
    """A chapter's frames measured (``measure``), its gain to a loudness found (``gain_to``),
    and its audio at that gain, limited (``limited``)."""

    def __init__(self, pcm: Path, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._samples = np.memmap(pcm, dtype="<i2", mode="r") if pcm.stat().st_size else None
        self.length = 0 if self._samples is None else len(self._samples)
        self._ceiling = 10 ** (CEILING_DBTP / 20)
        self._half = half_window(sample_rate)
        frames = -(-self.length // FRAME)
        self._peaks = np.zeros(frames, np.float32)  # each frame's largest sample, then true peak
        self._oversampled = np.zeros(frames, bool)
        self._energies = np.zeros(frames, np.float32)  # each frame's K-weighted sum of squares
        self._measure()

    def _measure(self) -> None:
        weighting = KWeighting(self.sample_rate)
        for start in range(0, self.length, _READ):
            block = self._block(start, min(start + _READ, self.length))
            padded = np.pad(block, (0, -len(block) % FRAME))
            weighted = np.pad(weighting(block), (0, -len(block) % FRAME)).reshape(-1, FRAME)
            frames = slice(start // FRAME, start // FRAME + len(weighted))
            self._peaks[frames] = np.abs(padded).reshape(-1, FRAME).max(axis=1)
            self._energies[frames] = np.einsum("ij,ij->i", weighted, weighted)

    def _block(self, start: int, end: int) -> np.ndarray:
        assert self._samples is not None
        return self._samples[start:end].astype(np.float32) / 32768.0

    def _needed(self, gain: float) -> np.ndarray:
        """Each frame's need at linear ``gain``: what brings its true peak to the ceiling."""
        reach = self._peaks * gain > self._ceiling * CANDIDATE_MARGIN
        new = np.flatnonzero(reach & ~self._oversampled)
        if len(new):  # the true peaks of frames this gain is the first to bring near
            assert self._samples is not None
            self._peaks[new] = frame_true_peaks(self._samples, new) / 32768.0
            self._oversampled[new] = True
        needed = np.ones(len(self._peaks))
        peaks = np.maximum(self._peaks[reach] * gain, 1e-12)
        needed[reach] = np.minimum(1.0, self._ceiling / peaks)
        return needed

    def heard_lufs(self, gain_db: float) -> float:
        """The chapter's loudness at ``gain_db`` through the limiter, from its frames."""
        gain = 10 ** (gain_db / 20)
        limiting = smoothed_gains(self._needed(gain), self._half) * gain
        energies = self._energies.astype(np.float64) * limiting**2
        # Each 100 ms step's energy: the frames' running total at the step's edges (a frame a
        # step edge cuts is shared out by its samples).
        total = np.concatenate([[0.0], np.cumsum(energies)])
        step = step_samples(self.sample_rate)
        edges = np.arange(0, self.length // step * step + 1, step)
        at_edges = np.interp(edges, np.arange(len(total)) * FRAME, total)
        return gated_lufs(np.diff(at_edges), step)

    def gain_to(self, target: float) -> float:
        """The gain (dB) that brings the chapter to ``target`` LUFS as heard, to within
        ``LOUDNESS_TOLERANCE``: a secant search on ``heard_lufs``, from the gain that would
        reach it without the limiter."""
        gain = gain_db_to(target, self.heard_lufs(0.0))
        tried: list[tuple[float, float]] = []  # (gain, loudness heard)
        while gain > 0 and len(tried) < MAX_LOUDNESS_TRIES:  # under 0, nothing is lifted
            heard = self.heard_lufs(gain)
            if not math.isfinite(heard) or abs(target - heard) <= LOUDNESS_TOLERANCE:
                break
            tried.append((gain, heard))
            slope = 1.0  # LU per dB: at first, as if the limiter took nothing more
            if len(tried) > 1 and tried[-1][0] != tried[-2][0]:
                slope = (tried[-1][1] - tried[-2][1]) / (tried[-1][0] - tried[-2][0])
            gain = min(gain + (target - heard) / max(slope, 0.1), MAX_GAIN_DB)
        return gain

    def limited(self, gain_db: float) -> Iterator[np.ndarray]:
        """The chapter at ``gain_db``, its true peaks held at the ceiling: what the streamed
        limiter gives, from the peaks measured."""
        gain = 10 ** (gain_db / 20)
        needed = self._needed(gain)
        gains = smoothed_gains(needed, self._half)
        for start in range(0, self.length, _READ):
            end = min(start + _READ, self.length)
            limiting = (gain * sample_gains(gains, needed, start, end)).astype(np.float32)
            yield self._block(start, end) * limiting
