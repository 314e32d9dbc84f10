"""The true-peak limiter: peaks kept under the ceiling between samples too, audio under it left
exactly as it was, the same result for any block sizes, and little loudness lost on speech."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest

from tests.audio.signals import sine
from voxserve.audio.limiter import PeakLimiter, true_peaks
from voxserve.engines.base import SynthesisOptions
from voxserve.engines.piper import PiperEngine

RATE = 22050
CEILING = 10 ** (-1.5 / 20)


def limited(samples: np.ndarray, blocks: list[int]) -> np.ndarray:
    limiter = PeakLimiter(RATE)
    out, start = [], 0
    for size in blocks:
        out.append(limiter.process(samples[start : start + size]))
        start += size
    out.append(limiter.process(samples[start:]))
    out.append(limiter.flush())
    return np.concatenate(out)


def test_true_peaks_find_the_waveform_between_samples():
    # A sine at a quarter of the rate, sampled 45 degrees off its crests: every sample is at
    # 0.707 of the amplitude, the crests halfway between every other pair of them.
    t = np.arange(2048)
    samples = np.sin(np.pi / 2 * t + np.pi / 4).astype(np.float32)
    assert np.max(np.abs(samples)) == pytest.approx(0.7071, abs=1e-3)
    peaks = true_peaks(samples)[100:-100]  # the ends: the interpolation runs off the signal
    np.testing.assert_allclose(peaks[0::2], 1.0, atol=0.01)
    np.testing.assert_allclose(peaks[1::2], 0.7071, atol=0.01)


@pytest.fixture(scope="module")
def loud_speech() -> np.ndarray:
    # Without Piper's noise the speech is the same every run: with it, about one take in forty
    # has a syllable so far above the rest that limiting it costs over 3 LU.
    engine = PiperEngine({"noise_scale": 0.0, "noise_w_scale": 0.0})
    text = "The limiter keeps the loudest syllables under the ceiling. Nothing else changes."
    samples = np.concatenate(
        [chunk.samples for chunk in engine.synthesize(text, SynthesisOptions(voice="joe"))]
    )
    return samples * (0.99 / np.max(np.abs(samples))) * 10 ** (6 / 20)  # peaks 6 dB over 0


def test_loud_speech_comes_out_under_the_ceiling_losing_little_loudness(loud_speech):
    out = limited(loud_speech, [65536] * 3)
    assert len(out) == len(loud_speech)
    assert np.max(true_peaks(out)) <= CEILING * 1.005
    # The gain only ever comes down, and never flips a sample's sign.
    ratio = out[np.abs(loud_speech) > 1e-3] / loud_speech[np.abs(loud_speech) > 1e-3]
    assert ratio.max() <= 1.0 + 1e-6 and ratio.min() > 0
    meter = pyloudnorm.Meter(RATE)
    lost = meter.integrated_loudness(loud_speech.astype(np.float64)) - meter.integrated_loudness(
        out.astype(np.float64)
    )
    assert 0 < lost < 3.0


def test_any_block_sizes_give_the_same_audio(loud_speech):
    whole = limited(loud_speech, [])
    rng = np.random.default_rng(7)
    uneven = limited(loud_speech, list(rng.integers(1, 5000, size=40)))
    np.testing.assert_allclose(uneven, whole, atol=1e-6)


def test_audio_under_the_ceiling_is_untouched():
    quiet = sine(220, 1.0, RATE, amplitude=0.5)
    np.testing.assert_array_equal(limited(quiet, [1000, 7]), quiet)
    limiter = PeakLimiter(RATE)
    assert len(limiter.process(quiet[:10])) == 0 and len(limiter.flush()) == 10
    assert limiter.gain_reduction_db == 0.0
