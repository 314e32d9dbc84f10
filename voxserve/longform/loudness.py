"""Integrated loudness (ITU-R BS.1770-4) of speech streamed block by block, and the gain that
brings a book to its target (-16 LUFS by default, what podcast and audiobook platforms ask
for).

The K-weighting filters are pyloudnorm's own design, run with scipy's ``lfilter`` keeping their
state from one ``add`` to the next, so a book is measured as it is made without holding its
audio: only each 100 ms step's summed squares are kept (8 bytes a step, about 300 KB for an
hour). Gating as the standard: blocks under -70 LUFS are dropped, then those 10 LU under the
loudness of the rest.
"""

from __future__ import annotations

import math

import numpy as np

BLOCK_STEPS = 4
"""A gating block is 400 ms: four steps of 100 ms (75% overlap)."""
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0


class KWeighting:
    """BS.1770's K-weighting filters, their state kept from one block to the next."""

    def __init__(self, sample_rate: int) -> None:
        import pyloudnorm
        from scipy.signal import lfilter_zi

        self._filters = [
            (stage.b, stage.a, lfilter_zi(stage.b, stage.a) * 0.0)
            for stage in pyloudnorm.Meter(sample_rate)._filters.values()
        ]

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        from scipy.signal import lfilter

        weighted = samples.astype(np.float64)
        for index, (b, a, state) in enumerate(self._filters):
            weighted, state = lfilter(b, a, weighted, zi=state)
            self._filters[index] = (b, a, state)
        return weighted


def step_samples(sample_rate: int) -> int:
    """Samples in a gating step (100 ms)."""
    return round(sample_rate * 0.1)


class LoudnessMeter:
    """Integrated loudness of float32 mono audio given in pieces of any length."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._weighting = KWeighting(sample_rate)
        self._step = step_samples(sample_rate)
        self._pending = np.zeros(0, dtype=np.float64)
        self._steps: list[float] = []  # every whole step's summed squares
        self.peak = 0.0
        """The loudest sample so far (absolute)."""

    def add(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        self.peak = max(self.peak, float(np.max(np.abs(samples))))
        pending = np.concatenate([self._pending, self._weighting(samples)])
        whole = len(pending) // self._step * self._step
        steps = pending[:whole].reshape(-1, self._step)
        self._steps.extend(np.einsum("ij,ij->i", steps, steps).tolist())
        self._pending = pending[whole:]

    def integrated_lufs(self) -> float:
        """The gated loudness so far; -inf for silence or under 400 ms of audio."""
        return gated_lufs(np.asarray(self._steps), self._step)


def gated_lufs(step_energies: np.ndarray, step: int) -> float:
    """Integrated loudness from each 100 ms step's summed squares of K-weighted audio (``step``
    samples long): blocks of four steps, gated as the standard; -inf for silence or under
    400 ms."""
    if len(step_energies) < BLOCK_STEPS:
        return -math.inf
    sums = np.convolve(step_energies, np.ones(BLOCK_STEPS), mode="valid")
    blocks = sums / (BLOCK_STEPS * step)
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(blocks)
    kept = blocks[loudness > ABSOLUTE_GATE_LUFS]
    if not len(kept):
        return -math.inf
    relative = -0.691 + 10 * math.log10(float(np.mean(kept))) + RELATIVE_GATE_LU
    gated = blocks[loudness > max(relative, ABSOLUTE_GATE_LUFS)]
    return -0.691 + 10 * math.log10(float(np.mean(gated)))


MAX_GAIN_DB = 20.0
"""A near-silent chapter is not raised into its noise floor."""


def gain_db_to(target_lufs: float, measured_lufs: float) -> float:
    """The gain (dB) that brings audio measured at ``measured_lufs`` to ``target_lufs``, at most
    ``MAX_GAIN_DB``; 0 for silence. Peaks the gain lifts past the ceiling are the true-peak
    limiter's (audio/limiter.py)."""
    if not math.isfinite(measured_lufs):
        return 0.0
    return min(target_lufs - measured_lufs, MAX_GAIN_DB)
