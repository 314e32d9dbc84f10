"""A look-ahead true-peak limiter for audio given a block at a time, so a book can be brought up
to its loudness target without its loudest syllables passing the ceiling: -1.5 dBTP, so that
the encoded book (AAC and MP3 overshoot their input by a few tenths of a decibel) stays under
the -1 dBTP podcast and audiobook platforms ask for.

Peaks are found four times oversampled (ITU-R BS.1770's true peak: the waveform between samples
can pass a sample's value). The gain moves in frames of 32 samples (1.5 ms at 22 kHz): each
frame's needed gain is the ceiling over its peak; the gain is the lowest needed within a window
around the frame, then averaged over the same window, then interpolated per sample. Both are
centred, so no gain passes what a frame needs (each average holds only values at most that),
and it moves over ``window`` seconds, not within a pitch period: no clicks and no distortion on
speech. Output is delayed by two windows; ``flush`` gives the rest, and the whole output is as
long as the input.

Speed (an hour of a book goes through it several times: loudness.py's measuring, then the
book): only frames whose samples come within 6 dB of the ceiling are oversampled (between
samples speech passes its samples by far less), and the windows run over frames, not samples.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import resample_poly

OVERSAMPLING = 4
CEILING_DBTP = -1.5
FRAME = 32
"""Samples per step of the gain."""
CANDIDATE_MARGIN = 0.5
"""A frame whose samples are all under half the ceiling (-6 dB) has its true peak under it."""
_REACH = 16  # samples either side of a frame that its oversampling reads (the filter's span)
_BATCH = 2048  # frames oversampled at a time (a few MB of work arrays)


def true_peaks(samples: np.ndarray) -> np.ndarray:
    """Each sample's true peak along the last axis: the largest magnitude of the 4x oversampled
    waveform over the sample's own period (its interpolation filter spans ten samples either
    side, so the first and last ten are approximate)."""
    upsampled = np.abs(resample_poly(samples.astype(np.float32), OVERSAMPLING, 1, axis=-1))
    # The largest of each sample's values (faster than a max over a reshaped axis of four).
    return functools.reduce(
        np.maximum, (upsampled[..., k::OVERSAMPLING] for k in range(OVERSAMPLING))
    )


class PeakLimiter:
    """Keeps float mono audio's true peaks at or under ``ceiling_dbtp``."""

    def __init__(
        self, sample_rate: int, *, ceiling_dbtp: float = CEILING_DBTP, window: float = 0.02
    ) -> None:
        self.ceiling = 10 ** (ceiling_dbtp / 20)
        self._half = half_window(sample_rate, window)
        # Samples either side of an output frame that its gain depends on: two half-windows of
        # frames, the neighbour it is interpolated with, and the oversampling's reach.
        self._context = (2 * self._half + 2) * FRAME
        # Input not yet given back, after ``_context`` samples already given back; zeros before
        # the start need no gain.
        self._buffer = np.zeros(self._context, np.float32)
        self.gain_reduction_db = 0.0
        """The most the gain has come down so far (dB, 0 or negative)."""

    def process(self, samples: np.ndarray) -> np.ndarray:
        """The limited audio, all but the last ``_context`` samples and any part frame."""
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32)])
        frames = (len(self._buffer) - 2 * self._context) // FRAME
        return self._given_back(self._context + max(frames, 0) * FRAME)

    def flush(self) -> np.ndarray:
        """The rest of the audio given so far."""
        pending = len(self._buffer) - self._context
        padding = -pending % FRAME + self._context
        self._buffer = np.concatenate([self._buffer, np.zeros(padding, np.float32)])
        return self._given_back(self._context + pending)

    def _given_back(self, end: int) -> np.ndarray:
        """Samples ``[_context, end)`` of the buffer, limited; the buffer from there on kept."""
        start = self._context
        if end <= start:
            return np.zeros(0, np.float32)
        whole = len(self._buffer) // FRAME * FRAME
        needed = frame_needs(self._buffer[:whole], frame_peaks(self._buffer[:whole]), self.ceiling)
        gain = sample_gains(smoothed_gains(needed, self._half), needed, start, end)
        self.gain_reduction_db = min(self.gain_reduction_db, 20 * float(np.log10(gain.min())))
        limited = (self._buffer[start:end] * gain).astype(np.float32)
        self._buffer = self._buffer[end - self._context :]
        return limited


def half_window(sample_rate: int, window: float = 0.02) -> int:
    """Half the gain's smoothing window, in frames."""
    return max(1, round(window * sample_rate / FRAME))


def frame_peaks(samples: np.ndarray) -> np.ndarray:
    """Each whole frame's largest sample magnitude."""
    return np.abs(samples[: len(samples) // FRAME * FRAME]).reshape(-1, FRAME).max(axis=1)


def frame_true_peaks(samples: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The true peak of each of ``frames`` (indices) of ``samples`` (any array that indexes, a
    memory map too), its oversampling reading the samples either side (zeros past the ends)."""
    found = np.empty(len(frames), np.float32)
    # A batch at a time: all of a chapter's frames at once took a few hundred megabytes for a
    # moment, which the allocator kept (the server's memory rose in steps through a book).
    for batch in range(0, len(frames), _BATCH):
        at = frames[batch : batch + _BATCH, None] * FRAME + np.arange(-_REACH, FRAME + _REACH)
        inside = (at >= 0) & (at < len(samples))
        windows = np.where(inside, np.asarray(samples[np.clip(at, 0, len(samples) - 1)]), 0)
        found[batch : batch + _BATCH] = true_peaks(windows)[:, _REACH : _REACH + FRAME].max(1)
    return found


def frame_needs(samples: np.ndarray, peaks: np.ndarray, ceiling: float) -> np.ndarray:
    """The gain that brings each frame of ``samples`` (their sample ``peaks``) to ``ceiling``:
    1 for those under it; only frames within 6 dB of it are oversampled."""
    needed = np.ones(len(peaks))
    candidates = np.flatnonzero(peaks > ceiling * CANDIDATE_MARGIN)
    if len(candidates):
        found = frame_true_peaks(samples, candidates)
        needed[candidates] = np.minimum(1.0, ceiling / np.maximum(found, 1e-12))
    return needed


def smoothed_gains(needed: np.ndarray, half: int) -> np.ndarray:
    """Each frame's gain: the lowest needed within ``half`` frames either side, averaged over
    the same window, and never above the frame's own need."""
    width = 2 * half + 1
    lowest = minimum_filter1d(needed, width, mode="nearest")
    return np.minimum(uniform_filter1d(lowest, width, mode="nearest"), needed)


def sample_gains(gains: np.ndarray, needed: np.ndarray, start: int, end: int) -> np.ndarray:
    """The gain of each sample in ``[start, end)``: the frames' gains interpolated between
    their centres, and never above the own frame's need (arrays indexed by frame from 0)."""
    first, last = start // FRAME, -(-end // FRAME)  # the frames the samples span
    low, high = max(first - 1, 0), min(last + 1, len(gains))
    centres = (np.arange(low, high) + 0.5) * FRAME
    gain = np.interp(np.arange(start, end), centres, gains[low:high])
    return np.minimum(gain, np.repeat(needed[first:last], FRAME)[: end - start])
