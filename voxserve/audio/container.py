"""Compressed output (mp3, opus, aac, flac): one PyAV codec + muxer pair, encoded incrementally."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from voxserve.audio.dsp import StreamResampler, float_to_int16


@dataclass(frozen=True)
class ContainerFormat:
    """How one compressed output format is produced with FFmpeg."""

    name: str
    """Format name used in requests, e.g. "mp3"."""

    content_type: str
    """HTTP Content-Type of the muxed stream."""

    muxer: str
    """FFmpeg output format name."""

    codec: str
    """FFmpeg encoder name."""

    sample_format: str
    """Sample format the encoder is fed: "flt"/"fltp" (float32) or "s16"."""

    bit_rate: int | None = None
    """Target bits per second; None for lossless codecs."""

    sample_rates: tuple[int, ...] | None = None
    """Rates the encoder accepts, ascending; None if it takes any rate."""

    muxer_options: dict[str, str] = field(default_factory=dict)
    """FFmpeg options for the muxer."""


class _ByteSink:
    """Write-only file object for PyAV.

    It has no seek(), so muxers treat the output as a live stream: they never go back to patch a
    header, and every byte written can be handed to the client straight away.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        """Everything written since the last drain."""
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class ContainerEncoder:
    """Streams float32 mono audio into a compressed container, returning bytes as they are muxed."""

    def __init__(self, spec: ContainerFormat, sample_rate: int) -> None:
        self.format = spec.name
        self.content_type = spec.content_type
        self.sample_rate = sample_rate
        self._spec = spec
        self._codec_rate = _codec_rate(spec, sample_rate)
        self._resampler = StreamResampler(sample_rate, self._codec_rate)
        self._sink = _ByteSink()
        # flush_packets hands each packet to the sink at once instead of batching 32 KiB.
        self._container = av.open(
            self._sink,
            "w",
            format=spec.muxer,
            container_options={"flush_packets": "1", **spec.muxer_options},
        )
        self._stream = self._container.add_stream(spec.codec, rate=self._codec_rate)
        self._stream.layout = "mono"
        self._stream.format = spec.sample_format
        if spec.bit_rate is not None:
            self._stream.bit_rate = spec.bit_rate
        self._stream.codec_context.open()
        # Write the header now, so the client has it before the first audio frame is encoded.
        self._container.start_encoding()
        # 0 means the encoder takes frames of any size; otherwise every frame but the last must
        # have exactly this many samples (mp3 1152 or 576, aac 1024, opus 20 ms).
        self._frame_size: int = self._stream.codec_context.frame_size
        self._pending = np.zeros(0, dtype=np.float32)
        self._samples_sent = 0
        self._finished = False

    def encode(self, samples: np.ndarray) -> bytes:
        if self._finished:
            raise RuntimeError(f"{self.format} encoder already finished")
        self._buffer(self._resampler.process(samples))
        whole_frames = len(self._pending)
        if self._frame_size:
            whole_frames -= whole_frames % self._frame_size
        self._encode_frames(self._pending[:whole_frames])
        self._pending = self._pending[whole_frames:]
        return self._sink.drain()

    def finish(self) -> bytes:
        """Encode what is buffered, flush the codec and write the container trailer."""
        if self._finished:
            raise RuntimeError(f"{self.format} encoder already finished")
        self._finished = True
        self._buffer(self._resampler.process(np.zeros(0, dtype=np.float32), last=True))
        # Every codec used here accepts a short final frame (AV_CODEC_CAP_SMALL_LAST_FRAME), so
        # the remainder goes in unpadded and decoders don't get extra silence.
        self._encode_frames(self._pending)
        self._pending = self._pending[:0]
        self._container.mux(self._stream.encode(None))
        # close() writes the trailer and flushes FFmpeg's I/O buffer into the sink.
        self._container.close()
        return self._sink.drain()

    def _buffer(self, samples: np.ndarray) -> None:
        if len(samples):
            self._pending = np.concatenate((self._pending, samples))

    def _encode_frames(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        codec_samples = float_to_int16(samples) if self._spec.sample_format == "s16" else samples
        step = self._frame_size or len(samples)
        for start in range(0, len(samples), step):
            frame = self._make_frame(codec_samples[start : start + step])
            self._container.mux(self._stream.encode(frame))

    def _make_frame(self, samples: np.ndarray) -> av.AudioFrame:
        # Mono planar and packed layouts are both a single (1, n) plane.
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1), format=self._spec.sample_format, layout="mono"
        )
        frame.sample_rate = self._codec_rate
        frame.time_base = Fraction(1, self._codec_rate)
        frame.pts = self._samples_sent
        self._samples_sent += len(samples)
        return frame


def _codec_rate(spec: ContainerFormat, sample_rate: int) -> int:
    """The input rate if the codec takes it, else the nearest higher rate it does (or its max)."""
    if spec.sample_rates is None or sample_rate in spec.sample_rates:
        return sample_rate
    higher = [rate for rate in spec.sample_rates if rate > sample_rate]
    return higher[0] if higher else spec.sample_rates[-1]
