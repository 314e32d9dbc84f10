from __future__ import annotations

import numpy as np
import pytest

from voxserve.audio import StreamResampler, apply_fades, silence, trim_leading_silence

from .signals import dominant_frequency, sine


@pytest.mark.parametrize(("in_rate", "out_rate"), [(22050, 24000), (22050, 48000), (44100, 16000)])
def test_chunked_resampling_matches_one_shot(in_rate: int, out_rate: int) -> None:
    tone = sine(440, 1.0, in_rate)
    chunked = StreamResampler(in_rate, out_rate)
    chunks = np.array_split(tone, 37)

    pieces = [chunked.process(chunk, last=i == len(chunks) - 1) for i, chunk in enumerate(chunks)]
    one_shot = StreamResampler(in_rate, out_rate).process(tone, last=True)

    np.testing.assert_allclose(np.concatenate(pieces), one_shot, atol=1e-5)
    assert len(one_shot) == pytest.approx(len(tone) * out_rate / in_rate, abs=2)
    assert dominant_frequency(one_shot, out_rate) == pytest.approx(440, abs=2)


def test_equal_rates_pass_through() -> None:
    samples = np.linspace(-1, 1, 101)

    resampled = StreamResampler(16000, 16000).process(samples)

    assert resampled.dtype == np.float32
    np.testing.assert_array_equal(resampled, samples.astype(np.float32))


def test_fades_ramp_the_edges_only() -> None:
    samples = np.ones(1000, dtype=np.float32)

    faded = apply_fades(samples, sample_rate=1000, fade_in_ms=10, fade_out_ms=20)

    assert faded[0] == 0 and faded[-1] == 0
    assert np.all(np.diff(faded[:10]) > 0) and np.all(np.diff(faded[-20:]) < 0)
    np.testing.assert_array_equal(faded[10:-20], 1)
    np.testing.assert_array_equal(samples, 1)  # the input is left alone


@pytest.mark.parametrize("length", [0, 1, 5])
def test_fades_on_arrays_shorter_than_the_fade(length: int) -> None:
    faded = apply_fades(np.ones(length, dtype=np.float32), 1000, fade_in_ms=10, fade_out_ms=10)

    assert len(faded) == length
    assert np.all((faded >= 0) & (faded <= 1))
    if length:
        assert faded[0] == 0 and faded[-1] == 0


def test_zero_length_fades_copy_unchanged() -> None:
    samples = sine(440, 0.1, 16000)

    faded = apply_fades(samples, 16000, fade_in_ms=0, fade_out_ms=0)

    assert faded is not samples
    np.testing.assert_array_equal(faded, samples)


def test_silence() -> None:
    quiet = silence(0.25, 22050)

    assert quiet.dtype == np.float32
    assert len(quiet) == round(0.25 * 22050)
    assert not quiet.any()


def test_leading_near_silence_is_cut_to_a_short_fade_in() -> None:
    rate = 16000
    tone = sine(440, 0.2, rate)[1:]  # loud from its first sample on
    hush = np.full(800, 0.001, dtype=np.float32)  # 50 ms at -60 dBFS, as Piper opens sentences

    trimmed = trim_leading_silence(np.concatenate([hush, tone]), rate)

    assert len(trimmed) == 160 + len(tone)  # 10 ms kept before the first loud sample
    assert trimmed[0] == 0.0  # faded in: no click
    np.testing.assert_array_equal(trimmed[160:], tone)


def test_audio_that_is_all_quiet_is_left_alone() -> None:
    hush = np.full(800, 0.001, dtype=np.float32)

    assert trim_leading_silence(hush, 16000) is hush
