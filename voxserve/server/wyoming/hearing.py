"""A ``transcribe``'s audio, gathered as it comes and heard by Whisper once it stops.

Home Assistant finds the end of speech itself (``requires_external_vad``) and sends 16 kHz
16-bit mono; any rate, width and channel count is taken, converted as it arrives, so that only
Whisper's own samples are kept (bounded by ``wyoming.max_audio_seconds``).
"""

from __future__ import annotations

import asyncio

import numpy as np
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart

from voxserve.audio import StreamResampler
from voxserve.audio.transcribe import WHISPER_SAMPLE_RATE, Transcriber
from voxserve.errors import InvalidRequestError

PCM16_SCALE = 32768.0


class Hearing:
    """One utterance: ``start``, ``add`` each chunk, then ``transcript``."""

    def __init__(self, language: str | None, max_seconds: float):
        self.language = language
        self.max_samples = round(max_seconds * WHISPER_SAMPLE_RATE)
        self._to_mono16 = AudioChunkConverter(width=2, channels=1)
        self._resampler: StreamResampler | None = None
        self._pieces: list[np.ndarray] = []
        self._samples = 0

    def start(self, start: AudioStart) -> None:
        self._resampler = StreamResampler(start.rate, WHISPER_SAMPLE_RATE)

    def add(self, chunk: AudioChunk) -> None:
        if self._resampler is None:  # audio-start was skipped: the chunks say their format
            self._resampler = StreamResampler(chunk.rate, WHISPER_SAMPLE_RATE)
        pcm = np.frombuffer(self._to_mono16.convert(chunk).audio, dtype="<i2")
        self._keep(self._resampler.process(pcm.astype(np.float32) / PCM16_SCALE))

    async def transcript(self, transcriber: Transcriber) -> str:
        """The words heard ("" for none); Whisper runs in a worker thread."""
        if self._resampler is not None:
            self._keep(self._resampler.process(np.zeros(0, dtype=np.float32), last=True))
        samples = np.concatenate(self._pieces) if self._pieces else np.zeros(0, np.float32)
        if not len(samples):
            return ""
        return await asyncio.to_thread(transcriber.transcribe_samples, samples)

    def _keep(self, samples: np.ndarray) -> None:
        self._samples += len(samples)
        if self._samples > self.max_samples:
            seconds = self.max_samples / WHISPER_SAMPLE_RATE
            raise InvalidRequestError(
                f"speech to transcribe may be {seconds:g} s long at most "
                "(wyoming.max_audio_seconds)", param="audio", code="audio_too_long",
            )  # fmt: skip
        self._pieces.append(samples.astype(np.float32, copy=False))
