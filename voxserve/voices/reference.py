"""Reference audio for voice cloning: an uploaded clip checked, trimmed and levelled.

`prepare_reference` turns whatever a user uploads (WAV, MP3, FLAC, OGG, M4A...) into mono
float32 at one rate, with leading and trailing silence cut and a fixed loudness, or refuses it
with an `InvalidRequestError` whose message says what to fix (param ``audio_sample``):

    invalid_audio     the file cannot be decoded
    audio_silent      nothing was recorded
    audio_clipped     the recording is distorted by clipping
    audio_too_short   under `ReferenceLimits.min_seconds` once silence is trimmed
    audio_too_long    over `ReferenceLimits.max_seconds` once silence is trimmed
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass

import av
import numpy as np

from voxserve.audio import (
    StreamResampler,
    apply_fades,
    create_encoder,
    decode_audio,
    fix_wav_header,
)
from voxserve.errors import InvalidRequestError

_PARAM = "audio_sample"
_FORMATS_HINT = "upload WAV, MP3, FLAC, OGG or M4A"

_FRAME_SECONDS = 0.05
"""Level analysis window: long enough to average over a pitch period, short enough to find edges."""

_MARGIN_SECONDS = 0.15
"""Kept before the first and after the last loud frame: soft onsets ("h", "f") and breath
before speech sit below the threshold, and cloning models like a short lead-in."""

_EDGE_FADE_MS = 10.0
"""Raised-cosine ramps on the trimmed edges, so a cut through background noise does not click."""

_SILENT_DBFS = -60.0
"""A clip whose loudest frame is below this holds no usable speech (a muted or unplugged
microphone records hiss around -70..-90 dBFS; quiet but real speech peaks above -40)."""

_DIGITAL_SILENCE_DBFS = -150.0
"""Level given to all-zero frames; far below the 16-bit (-98 dBFS) and 24-bit floors."""

_TRIM_RANGE_DB = 40.0
"""Frames more than this below the loudest frame are silence, whatever the noise floor."""

_TRIM_ABOVE_FLOOR_DB = 12.0
"""Frames must also rise this far above the noise floor (10th percentile of frame levels)
to count as sound, so steady room noise at -45 dB below speech is trimmed too."""

_TRIM_MAX_DB = 20.0
"""...but a frame within this of the loudest frame always counts as sound (very noisy clips)."""

_NEAR_FULL_SCALE = 0.9
"""Samples at or above this magnitude (-0.9 dBFS) count as clipped. Not 1.0: lossy codecs smear
a flat clipped top into ripples from about 0.85 to 1.3 (MP3 decodes a clip at 6 dB too much
gain with no sample above 0.98), while mastering limiters stop at -1 dBFS (0.89)."""

_MAX_CLIPPED_FRACTION = 0.01
"""More than 1% of the kept samples near full scale is clipping. Measured on speech from the
embedded voice: peak-normalized to exactly 0 dBFS, 0.02% of samples reach 0.9 in WAV, MP3, AAC
and Opus alike; clipped at 6 dB too much gain, 1.7-2.1%; at 18 dB, about 20%."""

_PEAK_CEILING = 10 ** (-1.0 / 20)
"""Loudness normalization never lifts a peak above -1 dBFS, leaving room for the overshoot
that resampling and lossy encoding add downstream."""

_FAIL_FAST_FACTOR = 10
"""A clip longer than this many times `max_seconds` is refused before it is decoded."""


@dataclass(frozen=True, eq=False)
class ReferenceAudio:
    """A prepared reference clip: mono, trimmed, loudness-normalized."""

    samples: np.ndarray
    """Float32 samples in [-1, 1], shape (n,); read-only."""

    sample_rate: int
    """Samples per second."""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate

    def to_wav_bytes(self) -> bytes:
        """A complete 16-bit PCM mono WAV file (header sizes filled in)."""
        encoder = create_encoder("wav", self.sample_rate)
        return fix_wav_header(encoder.encode(self.samples) + encoder.finish())


@dataclass(frozen=True)
class ReferenceLimits:
    """What a reference clip must satisfy, and the form it is brought to."""

    min_seconds: float = 3.0
    """Shortest clip accepted, after trimming silence: less gives cloning too little to go on."""

    max_seconds: float = 30.0
    """Longest clip accepted, after trimming silence: more slows every synthesis that uses it."""

    sample_rate: int = 24000
    """Rate of the prepared samples."""

    target_dbfs: float = -20.0
    """RMS level of the prepared clip, unless that would push a peak above -1 dBFS."""

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError("need 0 < min_seconds <= max_seconds")
        if self.sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        if self.target_dbfs >= 0:
            raise ValueError("target_dbfs must be below 0")


MAX_CLIP_BYTES = int(ReferenceLimits.max_seconds * _FAIL_FAST_FACTOR * 48_000 * 2 * 2) + 2**16
"""The largest reference clip file taken (55 MiB): as long as a clip may be before it is trimmed
(300 s by default: longer is refused unread) as 48 kHz 16-bit stereo WAV, the largest form that
recorders and editors export speech in, plus room for its header and metadata. Compressed
formats take a tenth of that; 24-bit or 96 kHz WAV of so long a clip is refused by size."""


def prepare_reference(
    source: bytes | str | os.PathLike[str], limits: ReferenceLimits = ReferenceLimits()
) -> ReferenceAudio:
    """Decode, check, trim and level a reference clip (bytes of a file, or its path).

    Raises `InvalidRequestError` (param ``audio_sample``) for audio that cannot serve as a
    reference, and OSError for a path that cannot be read.
    """
    cap_seconds = limits.max_seconds * _FAIL_FAST_FACTOR
    _refuse_very_long(source, cap_seconds, limits)
    try:
        decoded = decode_audio(source)
    except ValueError as error:
        cause = error.__cause__
        if isinstance(cause, av.FFmpegError):
            raise _invalid_audio(_ffmpeg_reason(cause)) from error
        raise _invalid_audio(str(error).removeprefix("could not decode audio: ")) from error
    original, rate = decoded.samples, decoded.sample_rate
    if decoded.duration > cap_seconds:  # the container hid its length from the probe
        raise _too_long_before_trimming(cap_seconds, limits)
    if not len(original):
        raise _too_short(0.0, limits)

    # A DC offset (cheap sound cards) would count as sound when trimming and as loudness.
    samples = original - np.float32(original.mean(dtype=np.float64))
    levels = _frame_levels_db(samples, rate)
    loudest = float(levels.max())
    if loudest < _SILENT_DBFS:
        raise _silent(loudest)

    start, stop = _sound_bounds(levels, rate, len(samples))
    clipped = np.count_nonzero(np.abs(original[start:stop]) >= _NEAR_FULL_SCALE) / (stop - start)
    if clipped > _MAX_CLIPPED_FRACTION:
        raise InvalidRequestError(
            f"the recording is clipped (distorted): {clipped:.1%} of its samples are at or near "
            "full scale; record again at a lower input level (or further from the microphone)",
            param=_PARAM,
            code="audio_clipped",
        )

    seconds = (stop - start) / rate
    if seconds < limits.min_seconds:
        raise _too_short(seconds, limits)
    if seconds > limits.max_seconds:
        raise _too_long(seconds, limits)

    kept = samples[start:stop]
    resampled = StreamResampler(rate, limits.sample_rate).process(kept, last=True)
    faded = apply_fades(resampled, limits.sample_rate, _EDGE_FADE_MS, _EDGE_FADE_MS)
    levelled = _normalize(faded, limits.target_dbfs)
    levelled.setflags(write=False)
    return ReferenceAudio(samples=levelled, sample_rate=limits.sample_rate)


def _refuse_very_long(
    source: bytes | str | os.PathLike[str], cap_seconds: float, limits: ReferenceLimits
) -> None:
    """Refuse a clip longer than `cap_seconds` by reading packet timestamps, not decoding.

    Headers can lie (a streamed WAV declares no length), packet timestamps are what the decoder
    will produce; demuxing costs a small fraction of decoding, and stops at the cap.
    """
    file = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with av.open(file, "r") as container:
            if not container.streams.audio:
                raise _invalid_audio("the file has no audio track")
            stream = container.streams.audio[0]
            first: float | None = None
            for packet in container.demux(stream):
                if packet.pts is None or packet.time_base is None:
                    continue
                begin = float(packet.pts * packet.time_base)
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                first = begin if first is None else min(first, begin)
                if end - first > cap_seconds:
                    raise _too_long_before_trimming(cap_seconds, limits)
    except av.FFmpegError as error:
        if isinstance(error, OSError):  # a missing or unreadable file is not bad audio
            raise
        raise _invalid_audio(_ffmpeg_reason(error)) from error


def _frame_levels_db(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS level in dBFS of each consecutive frame (the last one may be shorter).

    Digital silence reads as `_DIGITAL_SILENCE_DBFS`, not -inf, so percentiles stay finite.
    """
    frame = max(1, round(_FRAME_SECONDS * sample_rate))
    starts = np.arange(0, len(samples), frame)
    energy = np.add.reduceat(np.square(samples), starts, dtype=np.float64)
    lengths = np.diff(np.append(starts, len(samples)))
    return 10 * np.log10(energy / lengths + 10 ** (_DIGITAL_SILENCE_DBFS / 10))


def _sound_bounds(levels: np.ndarray, sample_rate: int, length: int) -> tuple[int, int]:
    """Sample range from the first to the last frame with sound, plus the margin each side."""
    loudest = levels.max()
    floor = np.percentile(levels, 10)
    threshold = min(
        max(loudest - _TRIM_RANGE_DB, floor + _TRIM_ABOVE_FLOOR_DB), loudest - _TRIM_MAX_DB
    )
    loud = np.flatnonzero(levels >= threshold)
    frame = max(1, round(_FRAME_SECONDS * sample_rate))
    margin = round(_MARGIN_SECONDS * sample_rate)
    start = max(0, int(loud[0]) * frame - margin)
    stop = min(length, (int(loud[-1]) + 1) * frame + margin)
    return start, stop


def _normalize(samples: np.ndarray, target_dbfs: float) -> np.ndarray:
    """Scale to `target_dbfs` RMS, or less where that would lift a peak over the ceiling."""
    rms = math.sqrt(float(np.mean(np.square(samples), dtype=np.float64)))
    peak = float(np.max(np.abs(samples)))
    gain = min(10 ** (target_dbfs / 20) / rms, _PEAK_CEILING / peak)
    return (samples * np.float32(gain)).astype(np.float32, copy=False)


def _ffmpeg_reason(error: av.FFmpegError) -> str:
    if isinstance(error, av.InvalidDataError):
        return "the file is damaged or is not audio"
    return (error.strerror or str(error)).lower()


def _invalid_audio(reason: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"could not read the audio: {reason}; {_FORMATS_HINT}",
        param=_PARAM,
        code="invalid_audio",
    )


def _too_short(seconds: float, limits: ReferenceLimits) -> InvalidRequestError:
    # Rounded down, so that 2.96 s never reads as "3.0 s; record at least 3 s".
    return InvalidRequestError(
        f"the clip has {math.floor(seconds * 10) / 10:.1f} s of speech after trimming silence; "
        f"record at least {limits.min_seconds:g} s",
        param=_PARAM,
        code="audio_too_short",
    )


def _too_long(seconds: float, limits: ReferenceLimits) -> InvalidRequestError:
    return InvalidRequestError(
        f"the clip has {math.ceil(seconds * 10) / 10:.1f} s of speech after trimming silence; "
        f"trim it to at most {limits.max_seconds:g} s (a few sentences of clear speech is best)",
        param=_PARAM,
        code="audio_too_long",
    )


def _too_long_before_trimming(cap_seconds: float, limits: ReferenceLimits) -> InvalidRequestError:
    return InvalidRequestError(
        f"the clip is over {cap_seconds:g} s long; trim it to at most {limits.max_seconds:g} s "
        "of clear speech",
        param=_PARAM,
        code="audio_too_long",
    )


def _silent(loudest_dbfs: float) -> InvalidRequestError:
    if loudest_dbfs <= _DIGITAL_SILENCE_DBFS + 1:
        level = " (it holds only digital silence)"
    else:
        level = f" (its loudest moment is {loudest_dbfs:.0f} dBFS)"
    return InvalidRequestError(
        f"the clip is silent{level}: check the microphone is connected, selected and not muted, "
        "then record again",
        param=_PARAM,
        code="audio_silent",
    )
