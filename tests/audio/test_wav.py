from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

from voxserve.audio import create_encoder, decode_audio, decode_pcm16, fix_wav_header

from .signals import sine


def streamed_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    encoder = create_encoder("wav", sample_rate)
    return encoder.encode(samples[:1000]) + encoder.encode(samples[1000:]) + encoder.finish()


def test_header_comes_first_with_unknown_sizes() -> None:
    data = streamed_wav(sine(440, 0.5, 22050), 22050)

    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    assert struct.unpack_from("<I", data, 4)[0] == 0xFFFFFFFF
    assert data[36:40] == b"data"
    assert struct.unpack_from("<I", data, 40)[0] == 0xFFFFFFFF


def test_fixed_header_reads_with_the_wave_module() -> None:
    tone = sine(440, 0.5, 22050)
    streamed = streamed_wav(tone, 22050)

    with wave.open(io.BytesIO(fix_wav_header(streamed))) as reader:
        params = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate())
        frames = reader.readframes(reader.getnframes())

    assert params == (1, 2, 22050)
    assert frames == streamed[44:]
    assert len(frames) == 2 * len(tone)


def test_streamed_wav_decodes_with_ffmpeg() -> None:
    streamed = streamed_wav(sine(440, 0.5, 24000), 24000)

    decoded = decode_audio(streamed)

    assert decoded.sample_rate == 24000
    np.testing.assert_array_equal(decoded.samples, decode_pcm16(streamed[44:], 24000).samples)


def test_finish_without_audio_still_sends_the_header() -> None:
    data = create_encoder("wav", 16000).finish()

    assert len(data) == 44
    with wave.open(io.BytesIO(fix_wav_header(data))) as reader:
        assert reader.getnframes() == 0


def test_fix_wav_header_rejects_other_data() -> None:
    with pytest.raises(ValueError, match="not a RIFF/WAVE file"):
        fix_wav_header(b"ID3\x04" + bytes(100))
