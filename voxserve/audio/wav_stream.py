"""A PCM WAV read as it arrives: the header first, then samples as each piece of the body comes.

A server streaming a WAV (AllTalk's XTTS, Python's ``wave`` writing an empty file first) cannot
know its length when it sends the header, so its RIFF and data sizes are 0 or 0xFFFFFFFF: they
are not trusted here, and everything after the ``data`` chunk's header is audio until the stream
ends. Pieces may cut a sample (or a frame of several channels) anywhere; the cut part waits for
the next piece.
"""

from __future__ import annotations

import struct

import numpy as np

from voxserve.audio.decode import decode_pcm16
from voxserve.audio.frames import AudioChunk

_PCM = 1
_EXTENSIBLE = 0xFFFE
MAX_HEADER_BYTES = 64 * 1024
"""More than any WAV header needs (fmt, LIST and fact chunks): past it, the stream is not one."""


class WavStream:
    """``feed`` pieces of a 16-bit PCM WAV; each returns the samples it completes (mono)."""

    def __init__(self) -> None:
        self.sample_rate: int | None = None
        """Known once the header is read."""
        self._channels = 1
        self._pending = b""
        self._in_body = False

    def feed(self, data: bytes) -> AudioChunk | None:
        """The samples ``data`` completes; None while the header or a frame is still partial.
        Raises ValueError for a stream that is not a 16-bit PCM WAV."""
        self._pending += data
        if not self._in_body and not self._read_header():
            return None
        frame = 2 * self._channels
        whole = len(self._pending) - len(self._pending) % frame
        if not whole:
            return None
        body, self._pending = self._pending[:whole], self._pending[whole:]
        assert self.sample_rate is not None
        chunk = decode_pcm16(body, self.sample_rate)
        if self._channels == 1:
            return chunk
        mono = chunk.samples.reshape(-1, self._channels).mean(axis=1, dtype=np.float32)
        return AudioChunk(mono, self.sample_rate)

    def _read_header(self) -> bool:
        """Whether the header is complete (then ``_pending`` holds only audio)."""
        data = self._pending
        if len(data) >= 12 and (data[:4] != b"RIFF" or data[8:12] != b"WAVE"):
            raise ValueError("not a WAV stream (no RIFF/WAVE header)")
        offset = 12
        while len(data) >= offset + 8:
            chunk_id, size = struct.unpack_from("<4sI", data, offset)
            if chunk_id == b"data":
                if self.sample_rate is None:
                    raise ValueError("WAV stream has audio before its fmt chunk")
                self._pending, self._in_body = data[offset + 8 :], True
                return True
            if len(data) < offset + 8 + size:
                break
            if chunk_id == b"fmt ":
                self._format(data[offset + 8 : offset + 8 + size])
            offset += 8 + size + (size & 1)  # RIFF chunks are padded to even sizes
        if len(data) > MAX_HEADER_BYTES:
            raise ValueError("WAV stream header too long")
        return False

    def _format(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise ValueError("WAV stream has a short fmt chunk")
        tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
        if tag not in (_PCM, _EXTENSIBLE) or bits != 16 or not channels or not rate:
            raise ValueError(f"WAV stream is not 16-bit PCM (format {tag}, {bits} bits)")
        self._channels, self.sample_rate = channels, rate
