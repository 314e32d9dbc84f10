"""A WAV read as it arrives (voxserve/audio/wav_stream.py)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from voxserve.audio.wav_stream import WavStream


def header(rate: int = 16000, channels: int = 1, bits: int = 16, tag: int = 1,
           extra: bytes = b"") -> bytes:  # fmt: skip
    """A streaming WAV's header: sizes unknown (0), ``extra`` chunks before the data."""
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8,
                      channels * bits // 8, bits)  # fmt: skip
    return (b"RIFF" + struct.pack("<I", 0) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt))
            + fmt + extra + b"data" + struct.pack("<I", 0))  # fmt: skip


def fed(stream: WavStream, data: bytes, size: int) -> np.ndarray:
    chunks = [stream.feed(data[start : start + size]) for start in range(0, len(data), size)]
    return np.concatenate([chunk.samples for chunk in chunks if chunk is not None])


def test_a_stream_cut_anywhere_gives_every_sample_once():
    pcm = np.arange(-500, 500, dtype="<i2")
    stream = WavStream()
    listed = b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\0"  # an odd chunk, padded
    samples = fed(stream, header(extra=listed) + pcm.tobytes(), 3)  # header and samples cut
    assert stream.sample_rate == 16000
    assert np.array_equal(samples, pcm.astype(np.float32) / 32768)


def test_stereo_is_mixed_down():
    frames = np.array([[1000, 3000], [-2000, 0]], dtype="<i2")
    stream = WavStream()
    samples = fed(stream, header(channels=2) + frames.tobytes(), 5)
    assert np.allclose(samples, [2000 / 32768, -1000 / 32768])


@pytest.mark.parametrize(
    "data",
    [b"RIFX\0\0\0\0WAVE", header(bits=8), header(tag=3, bits=32)],
    ids=["not-riff", "8-bit", "float"],
)
def test_what_is_not_16_bit_pcm_is_refused(data):
    with pytest.raises(ValueError):
        WavStream().feed(data + b"\0\0")
