"""A music bed under speech: the music looped, faded in, ducked while speech plays (a sidechain:
the speech's own level drives the music's gain), and faded out after the last word.

The mixer is fed the speech a block at a time and gives the mix of the same length back, so a
book of any length is mixed in bounded memory (the music itself is decoded once, whole: a track
of a few minutes). The ducking gain follows the speech level per 10 ms frame, smoothed in
decibels with a fast attack (the music dips before a word is lost under it) and a slow release
(it does not pump between words), then interpolated per sample: no clicks.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from voxserve.audio.decode import decode_audio
from voxserve.audio.frames import AudioChunk
from voxserve.errors import InvalidRequestError

Item = TypeVar("Item")

FRAME_SECONDS = 0.01
SPEECH_THRESHOLD_DBFS = -45.0
"""A frame louder than this is speech, and ducks the music."""
ATTACK_SECONDS = 0.05
RELEASE_SECONDS = 0.4


class MusicBed(BaseModel):
    """How a music bed sits under the speech."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    level_db: float = Field(-20.0, ge=-60, le=0)
    """The music's level (RMS, dBFS) where no one speaks."""
    duck_db: float = Field(-12.0, ge=-40, le=0)
    """How far it dips while speech plays."""
    fade_in: float = Field(2.0, ge=0, le=30)
    """Seconds from silence to ``level_db`` at the start."""
    fade_out: float = Field(3.0, ge=0, le=30)
    """Seconds of music fading out after the speech ends."""


class BedMixer:
    """Mixes a music bed under speech given a block at a time (float32 mono)."""

    def __init__(self, music: bytes, bed: MusicBed, sample_rate: int) -> None:
        try:
            track = decode_audio(music, sample_rate).samples
        except ValueError as error:
            raise InvalidRequestError(
                f"the music file cannot be read: {error}", param="music"
            ) from error
        rms = float(np.sqrt(np.mean(np.square(track, dtype=np.float64)))) if len(track) else 0.0
        if rms < 1e-5:
            raise InvalidRequestError("the music file is silent", param="music")
        self.track = (track * (10 ** (bed.level_db / 20) / rms)).astype(np.float32)
        self.bed = bed
        self.rate = sample_rate
        self._frame = max(1, round(FRAME_SECONDS * sample_rate))
        self._position = 0  # samples of music given so far
        self._gain_db = 0.0  # the ducking gain now
        self._pending = np.zeros(0, np.float32)  # speech of a frame not yet whole

    def mix(self, speech: np.ndarray) -> np.ndarray:
        """``speech`` with the music under it, as long as ``speech``."""
        return speech + self._music(self._ducking(speech))

    def finish(self) -> np.ndarray:
        """The music after the speech: ``fade_out`` seconds, fading to silence."""
        length = round(self.bed.fade_out * self.rate)
        tail = self._music(self._ducking(np.zeros(length, np.float32)))
        fade = 0.5 * (1 + np.cos(np.linspace(0, np.pi, length, dtype=np.float32)))
        return tail * fade

    def _ducking(self, speech: np.ndarray) -> np.ndarray:
        """Per-sample gain (linear) for the music under ``speech``."""
        offset = len(self._pending)  # where ``speech`` starts among the frames
        frames = np.concatenate([self._pending, speech])
        whole = len(frames) // self._frame * self._frame
        levels = frames[:whole].reshape(-1, self._frame)
        rms = np.sqrt(np.mean(np.square(levels, dtype=np.float64), axis=1)) + 1e-12
        targets = np.where(20 * np.log10(rms) > SPEECH_THRESHOLD_DBFS, self.bed.duck_db, 0.0)
        attack = 1 - np.exp(-FRAME_SECONDS / ATTACK_SECONDS)
        release = 1 - np.exp(-FRAME_SECONDS / RELEASE_SECONDS)
        gains = np.empty(len(targets) + 1)  # gains[k]: at the start of frame k (then its end)
        gains[0] = self._gain_db
        for index, target in enumerate(targets):
            step = attack if target < gains[index] else release
            gains[index + 1] = gains[index] + step * (target - gains[index])
        self._gain_db = float(gains[-1])
        self._pending = frames[whole:]
        # Per sample, between the frames' gains; past the last whole frame, the last gain holds.
        positions = offset + np.arange(len(speech))
        per_sample = np.interp(positions, np.arange(len(gains)) * self._frame, gains)
        return (10 ** (per_sample / 20)).astype(np.float32)

    def _music(self, gain: np.ndarray) -> np.ndarray:
        """The next ``len(gain)`` samples of the looped track, faded in, times ``gain``."""
        indices = (self._position + np.arange(len(gain))) % len(self.track)
        fade_in = round(self.bed.fade_in * self.rate)
        ramp = np.clip((self._position + np.arange(len(gain))) / max(fade_in, 1), 0, 1)
        self._position += len(gain)
        return self.track[indices] * gain * ramp.astype(np.float32)


async def under_speech(
    items: AsyncIterator[Item], mixer: BedMixer
) -> AsyncIterator[Item | AudioChunk]:
    """A stream of speech (its ``AudioChunk``s; anything else, such as a dialogue's turn
    timings, passes as it is) with the music bed under it, then the bed's fade-out."""
    async with contextlib.aclosing(items) as stream:
        async for item in stream:
            if isinstance(item, AudioChunk):
                item = dataclasses.replace(item, samples=mixer.mix(item.samples))
            yield item
    yield AudioChunk(mixer.finish(), mixer.rate)
