from __future__ import annotations

import io

import av
import numpy as np
import pytest

from voxserve.audio import create_encoder, decode_audio, decode_pcm16

from .signals import dominant_frequency, rms, sine


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    encoder = create_encoder("wav", sample_rate)
    return encoder.encode(samples) + encoder.finish()


def stereo_m4a(left: np.ndarray, right: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sample_rate)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.stack([left, right]), format="fltp", layout="stereo")
        frame.sample_rate = sample_rate
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


@pytest.mark.parametrize("junk", [b"", b"not audio at all" * 64, bytes(range(256)) * 16])
def test_corrupt_input_raises_value_error(junk: bytes) -> None:
    with pytest.raises(ValueError, match="^could not decode audio: "):
        decode_audio(junk)


def test_missing_file_is_not_reported_as_bad_audio(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_audio(tmp_path / "missing.wav")


def test_decodes_paths(tmp_path) -> None:
    path = tmp_path / "tone.wav"
    path.write_bytes(wav_bytes(sine(440, 0.5, 16000), 16000))

    for source in (path, str(path)):
        decoded = decode_audio(source)
        assert (decoded.sample_rate, len(decoded.samples)) == (16000, 8000)


def test_resamples_on_request() -> None:
    decoded = decode_audio(wav_bytes(sine(440, 2.0, 22050), 22050), sample_rate=16000)

    assert decoded.sample_rate == 16000
    assert decoded.duration == pytest.approx(2.0, abs=0.01)
    assert dominant_frequency(decoded.samples, 16000) == pytest.approx(440, abs=2)


def test_stereo_m4a_is_averaged_to_mono() -> None:
    left = sine(440, 1.0, 44100, amplitude=0.5)

    decoded = decode_audio(stereo_m4a(left, np.zeros_like(left), 44100))

    assert decoded.samples.ndim == 1 and decoded.samples.dtype == np.float32
    assert dominant_frequency(decoded.samples, 44100) == pytest.approx(440, abs=2)
    middle = decoded.samples[11025:33075]
    assert rms(middle) == pytest.approx(rms(left) / 2, rel=0.1)


def test_decode_pcm16() -> None:
    decoded = decode_pcm16(np.array([0, 16384, -32768], dtype="<i2").tobytes(), 8000)

    np.testing.assert_array_equal(decoded.samples, np.array([0, 0.5, -1], dtype=np.float32))
    assert decoded.sample_rate == 8000


def test_decode_pcm16_rejects_half_samples() -> None:
    with pytest.raises(ValueError, match="odd number of bytes"):
        decode_pcm16(b"\x00\x01\x02", 8000)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_stream_without_audio_decodes_empty(fmt: str) -> None:
    encoder = create_encoder(fmt, 16000)

    decoded = decode_audio(encoder.finish())

    assert (decoded.sample_rate, len(decoded.samples)) == (16000, 0)
