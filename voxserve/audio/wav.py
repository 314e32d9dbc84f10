"""Uncompressed output: raw 16-bit PCM and streamable WAV."""

from __future__ import annotations

import struct

import numpy as np

from voxserve.audio.dsp import float_to_pcm16

# RIFF sizes are unknown while streaming; 0xFFFFFFFF is what FFmpeg, browsers and most players
# read as "until the end of the stream".
_UNKNOWN_SIZE = 0xFFFFFFFF
_PCM_FORMAT_TAG = 1
_BYTES_PER_SAMPLE = 2


class PcmEncoder:
    """Raw signed 16-bit little-endian mono PCM, no header."""

    format = "pcm"
    content_type = "audio/pcm"

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._finished = False

    def encode(self, samples: np.ndarray) -> bytes:
        if self._finished:
            raise RuntimeError(f"{self.format} encoder already finished")
        return float_to_pcm16(samples)

    def finish(self) -> bytes:
        self._finished = True
        return b""


class WavEncoder(PcmEncoder):
    """WAV whose header, sent first, declares unknown sizes so the body can stream."""

    format = "wav"
    content_type = "audio/wav"

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self._header: bytes = streaming_wav_header(sample_rate)

    def encode(self, samples: np.ndarray) -> bytes:
        return self._take_header() + super().encode(samples)

    def finish(self) -> bytes:
        return self._take_header() + super().finish()

    def _take_header(self) -> bytes:
        """The header the first time, then nothing."""
        header, self._header = self._header, b""
        return header


def streaming_wav_header(sample_rate: int) -> bytes:
    """A 44-byte mono 16-bit PCM WAV header with RIFF and data sizes marked unknown."""
    block_align = _BYTES_PER_SAMPLE
    return (
        struct.pack("<4sI4s", b"RIFF", _UNKNOWN_SIZE, b"WAVE")
        + struct.pack(
            "<4sIHHIIHH",
            b"fmt ",
            16,
            _PCM_FORMAT_TAG,
            1,
            sample_rate,
            sample_rate * block_align,
            block_align,
            8 * _BYTES_PER_SAMPLE,
        )
        + struct.pack("<4sI", b"data", _UNKNOWN_SIZE)
    )


def fix_wav_header(data: bytes) -> bytes:
    """Return a copy of a complete WAV file with its RIFF and data sizes filled in.

    For responses sent whole, where clients (Python's `wave`, some players) need real sizes.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    if len(data) - 8 > _UNKNOWN_SIZE:
        raise ValueError("WAV data too large for 32-bit RIFF sizes")
    fixed = bytearray(data)
    struct.pack_into("<I", fixed, 4, len(data) - 8)
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, chunk_size = struct.unpack_from("<4sI", data, offset)
        if chunk_id == b"data":
            struct.pack_into("<I", fixed, offset + 4, len(data) - offset - 8)
            return bytes(fixed)
        offset += 8 + chunk_size + (chunk_size & 1)  # RIFF chunks are padded to even sizes
    raise ValueError("WAV file has no data chunk")
