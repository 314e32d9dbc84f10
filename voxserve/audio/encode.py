"""Output formats: which exist, their content types, and the factory for their encoders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from voxserve.audio.container import ContainerEncoder, ContainerFormat
from voxserve.audio.wav import PcmEncoder, WavEncoder


class AudioEncoder(Protocol):
    """Turns a stream of float32 mono chunks into the bytes of one output format, incrementally."""

    format: str
    """Format name, a key of `AUDIO_FORMATS`."""

    content_type: str
    """HTTP Content-Type of the output."""

    sample_rate: int
    """Rate of the samples given to `encode`; the output's rate may differ (opus)."""

    def encode(self, samples: np.ndarray) -> bytes:
        """Feed float32 mono samples; return the bytes ready so far (maybe b"")."""
        ...

    def finish(self) -> bytes:
        """Flush the codec and return the final bytes, container trailer included."""
        ...


_CONTAINER_FORMATS: dict[str, ContainerFormat] = {
    spec.name: spec
    for spec in (
        ContainerFormat(
            name="mp3",
            content_type="audio/mpeg",
            muxer="mp3",
            codec="libmp3lame",
            sample_format="fltp",
            bit_rate=96_000,
            sample_rates=(8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
            # Bare MPEG frames from the first byte: clients such as LibreChat join responses end
            # to end, and an ID3v2 tag (or a Xing/Info frame giving one response's length) in the
            # middle of the joined stream stops strict decoders there.
            muxer_options={"id3v2_version": "0", "write_xing": "0"},
        ),
        ContainerFormat(
            name="opus",
            # RFC 7845: Opus in Ogg is audio/ogg. "audio/opus" (OpenAI's choice) is the RTP
            # payload type of RFC 7587; the bytes are the same, but audio/ogg lets browsers and
            # MediaSource pick the right demuxer.
            content_type="audio/ogg; codecs=opus",
            muxer="ogg",
            codec="libopus",
            sample_format="flt",
            bit_rate=48_000,
            sample_rates=(8000, 12000, 16000, 24000, 48000),
            # Ogg pages hold up to 1 s by default; 100 ms pages keep latency low for ~4% more bytes.
            muxer_options={"page_duration": "100000"},
        ),
        ContainerFormat(
            name="aac",
            content_type="audio/aac",
            muxer="adts",
            codec="aac",
            sample_format="fltp",
            bit_rate=80_000,
            sample_rates=(8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
        ),
        ContainerFormat(
            name="flac",
            content_type="audio/flac",
            muxer="flac",
            codec="flac",
            sample_format="s16",
            # The muxer reserves 8 KiB for metadata it can only fill in by seeking back, which a
            # stream never does.
            muxer_options={"metadata_header_padding": "0"},
        ),
    )
}

AUDIO_FORMATS: dict[str, str] = {
    PcmEncoder.format: PcmEncoder.content_type,
    WavEncoder.format: WavEncoder.content_type,
    **{name: spec.content_type for name, spec in _CONTAINER_FORMATS.items()},
}
"""Supported output format names and their HTTP content types."""


def create_encoder(fmt: str, sample_rate: int) -> AudioEncoder:
    """A fresh encoder for `fmt`, fed with mono float32 audio at `sample_rate`."""
    if fmt == PcmEncoder.format:
        return PcmEncoder(sample_rate)
    if fmt == WavEncoder.format:
        return WavEncoder(sample_rate)
    if fmt in _CONTAINER_FORMATS:
        return ContainerEncoder(_CONTAINER_FORMATS[fmt], sample_rate)
    supported = ", ".join(AUDIO_FORMATS)
    raise ValueError(f"unsupported audio format {fmt!r}; supported: {supported}")


def format_for_path(path: str | os.PathLike) -> str | None:
    """The audio format a file name asks for, if its extension names one."""
    extension = Path(path).suffix.lower().lstrip(".")
    extension = {"ogg": "opus", "m4a": "aac", "raw": "pcm"}.get(extension, extension)
    return extension if extension in AUDIO_FORMATS else None
