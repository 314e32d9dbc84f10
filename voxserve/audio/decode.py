"""Reading audio files and bytes (reference voices, tests) into mono float32."""

from __future__ import annotations

import io
import os

import av
import numpy as np

from voxserve.audio.frames import AudioChunk

_PCM16_SCALE = 32768.0  # the divisor FFmpeg uses, so both decoders agree on the same bytes


def decode_audio(
    source: bytes | str | os.PathLike[str], sample_rate: int | None = None
) -> AudioChunk:
    """Decode any container and codec FFmpeg reads, mixed down to mono float32.

    Resamples to `sample_rate` when given, else keeps the stream's own rate.
    Raises ValueError for corrupt or unsupported input, OSError for a file that cannot be read.
    """
    file = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with av.open(file, "r") as container:
            if not container.streams.audio:
                raise ValueError("could not decode audio: no audio stream")
            stream = container.streams.audio[0]
            rate = sample_rate or stream.codec_context.sample_rate
            # Planar float keeps channels apart, so the mono mix-down is a plain average
            # (FFmpeg's own downmix sums at -3 dB and can exceed full scale).
            resampler = av.AudioResampler(format="fltp", rate=rate)
            planes: list[np.ndarray] = []
            for frame in container.decode(stream):
                planes.extend(converted.to_ndarray() for converted in resampler.resample(frame))
            planes.extend(converted.to_ndarray() for converted in resampler.resample(None))
    except av.FFmpegError as error:
        if isinstance(error, OSError):  # a missing or unreadable file is not bad audio
            raise
        raise ValueError(f"could not decode audio: {error}") from error
    if not planes:
        return AudioChunk(samples=np.zeros(0, dtype=np.float32), sample_rate=rate)
    samples = np.concatenate(planes, axis=1).mean(axis=0, dtype=np.float32)
    return AudioChunk(samples=samples, sample_rate=rate)


def decode_pcm16(data: bytes, sample_rate: int) -> AudioChunk:
    """Interpret raw signed 16-bit little-endian mono PCM."""
    if len(data) % 2:
        raise ValueError("could not decode audio: odd number of bytes in 16-bit PCM")
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(_PCM16_SCALE)
    return AudioChunk(samples=samples, sample_rate=sample_rate)


class Pcm16Stream:
    """Raw 16-bit PCM from bytes cut anywhere (a provider's stream): ``feed`` returns the
    samples each piece completes; an odd byte waits for the next piece."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self._odd = b""

    def feed(self, data: bytes) -> AudioChunk | None:
        data = self._odd + data
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        return decode_pcm16(data[:whole], self.sample_rate) if whole else None
