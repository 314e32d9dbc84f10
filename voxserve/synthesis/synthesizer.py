"""Text -> segments -> engine -> audio, pipelined.

A producer task synthesizes segments in order into a bounded queue while the consumer (the caller
iterating ``stream``) post-processes, encodes and sends the previous ones. When the caller stops
iterating (a client went away), the producer is cancelled and no further segment starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import numpy as np

from voxserve.audio import StreamResampler, apply_fades, create_encoder, silence
from voxserve.audio.frames import AudioChunk
from voxserve.config import Settings
from voxserve.engines.base import Engine, SynthesisOptions, Voice
from voxserve.engines.registry import EngineRegistry
from voxserve.errors import EngineError, InvalidRequestError, VoxserveError
from voxserve.request import SpeechRequest
from voxserve.synthesis.plan import Segment, plan_segments
from voxserve.synthesis.threads import iterate_in_thread
from voxserve.text import normalize_text

FADE_MS = 5.0  # long enough to remove clicks at joins, too short to hear


@dataclass(frozen=True)
class Progress:
    segments_done: int
    segments_total: int
    audio_seconds: float


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class PreparedSpeech:
    """A validated request with its plan; everything that can be rejected has been checked."""

    request: SpeechRequest
    engine: Engine
    voice: Voice
    segments: list[Segment]
    sample_rate: int
    """Output sample rate."""


@dataclass
class SynthesisStats:
    requests: int = 0
    segments: int = 0
    audio_seconds: float = 0.0
    active: int = 0


@dataclass(frozen=True)
class _Piece:
    segment: Segment
    chunk: AudioChunk
    first: bool
    last: bool


_END = object()


class Synthesizer:
    def __init__(self, settings: Settings, registry: EngineRegistry | None = None):
        self.settings = settings
        self.registry = registry or EngineRegistry(settings)
        self.stats = SynthesisStats()
        self._engine_slots: dict[str, asyncio.Semaphore] = {}

    def prepare(self, request: SpeechRequest) -> PreparedSpeech:
        """Validate a request against the settings and its engine, and plan its segments."""
        if len(request.input) > self.settings.max_input_chars:
            raise InvalidRequestError(
                f"input is {len(request.input)} characters; the maximum is "
                f"{self.settings.max_input_chars}",
                param="input",
                code="input_too_long",
            )
        resolved = self.registry.resolve_voice(request.voice, request.model)
        engine, voice = resolved.engine, resolved.voice
        capabilities = engine.capabilities
        low, high = capabilities.speed_range
        if not low <= request.speed <= high:
            raise InvalidRequestError(
                f"speed {request.speed} is outside {engine.name}'s range {low}-{high}",
                param="speed",
            )
        if request.language and not _language_supported(request.language, capabilities.languages):
            raise InvalidRequestError(
                f"engine {engine.name!r} does not speak {request.language!r}; it speaks "
                f"{', '.join(capabilities.languages)}",
                param="language",
                code="unsupported_language",
            )
        text = normalize_text(request.input) if request.normalize else request.input
        segments = plan_segments(
            text,
            voice.id,
            max_chars=capabilities.max_input_chars,
            sentence_pause=self.settings.sentence_pause,
            clause_pause=self.settings.clause_pause,
            small_first=self.settings.first_fragment_small,
        )
        if not segments:
            raise InvalidRequestError(
                "input has nothing to speak", param="input", code="empty_input"
            )
        sample_rate = request.sample_rate or voice.sample_rate or capabilities.sample_rate
        return PreparedSpeech(request, engine, voice, segments, sample_rate)

    async def stream(
        self, speech: SpeechRequest | PreparedSpeech, progress: ProgressCallback | None = None
    ) -> AsyncIterator[AudioChunk]:
        """Audio at the output rate, with pauses and fades, as soon as each piece is ready."""
        prepared = speech if isinstance(speech, PreparedSpeech) else self.prepare(speech)
        await self.registry.ensure_loaded(prepared.engine.name)
        # Unbounded queue, bounded in segments: the producer takes a slot before synthesizing a
        # segment and the consumer frees it once the segment is consumed, so an engine never waits
        # on a slow client in the middle of a segment while holding its concurrency slot.
        queue: asyncio.Queue = asyncio.Queue()
        ahead = asyncio.Semaphore(self.settings.lookahead)
        producer = asyncio.create_task(self._produce(prepared, queue, ahead))
        last_index = prepared.segments[-1].index
        resampler: StreamResampler | None = None
        done, audio_seconds = 0, 0.0
        self.stats.requests += 1
        self.stats.active += 1
        try:
            while (piece := await queue.get()) is not _END:
                if isinstance(piece, BaseException):
                    raise piece
                samples = _shape_piece(piece, self.settings)
                if resampler is None or resampler.in_rate != piece.chunk.sample_rate:
                    resampler = StreamResampler(piece.chunk.sample_rate, prepared.sample_rate)
                end_of_audio = piece.last and piece.segment.index == last_index
                output = resampler.process(samples, last=end_of_audio)
                if piece.last:
                    done += 1
                    ahead.release()
                if len(output):
                    audio_seconds += len(output) / prepared.sample_rate
                    yield AudioChunk(output, prepared.sample_rate)
                if piece.last and progress is not None:
                    progress(Progress(done, len(prepared.segments), audio_seconds))
            self.stats.audio_seconds += audio_seconds
        finally:
            self.stats.active -= 1
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    async def stream_encoded(
        self, speech: SpeechRequest | PreparedSpeech, progress: ProgressCallback | None = None
    ) -> AsyncIterator[bytes]:
        """The request's audio in its ``response_format``, encoded incrementally."""
        prepared = speech if isinstance(speech, PreparedSpeech) else self.prepare(speech)
        encoder = create_encoder(prepared.request.response_format, prepared.sample_rate)
        # Raw PCM costs microseconds; real codecs get a worker thread so the loop stays free.
        inline = prepared.request.response_format in ("pcm", "wav")
        async with contextlib.aclosing(self.stream(prepared, progress)) as chunks:
            async for chunk in chunks:
                if inline:
                    data = encoder.encode(chunk.samples)
                else:
                    data = await asyncio.to_thread(encoder.encode, chunk.samples)
                if data:
                    yield data
        tail = encoder.finish()
        if tail:
            yield tail

    async def _produce(
        self, prepared: PreparedSpeech, queue: asyncio.Queue, ahead: asyncio.Semaphore
    ) -> None:
        engine = prepared.engine
        slots = self._engine_slots.setdefault(
            engine.name, asyncio.Semaphore(engine.capabilities.concurrency)
        )
        request = prepared.request
        try:
            for segment in prepared.segments:
                options = SynthesisOptions(
                    voice=segment.voice,
                    speed=request.speed,
                    language=request.language,
                    instructions=request.instructions,
                )
                await ahead.acquire()
                async with slots:
                    chunks = iterate_in_thread(
                        _with_position(engine.synthesize(segment.text, options))
                    )
                    async with contextlib.aclosing(chunks):
                        produced = False
                        async for chunk, first, last in chunks:
                            produced = True
                            queue.put_nowait(_Piece(segment, chunk, first, last))
                if not produced:
                    raise EngineError(
                        f"engine {engine.name!r} produced no audio for segment {segment.index}",
                        code="no_audio",
                    )
                self.stats.segments += 1
            queue.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except VoxserveError as error:
            queue.put_nowait(error)
        except Exception as error:  # an engine bug must fail this request, not the server
            wrapped = EngineError(f"engine {engine.name!r} failed: {error}", code="engine_failed")
            wrapped.__cause__ = error
            queue.put_nowait(wrapped)


def _with_position(chunks: Iterator[AudioChunk]) -> Iterator[tuple[AudioChunk, bool, bool]]:
    """Tag each chunk with whether it is a segment's first and last (holds one chunk back)."""
    previous: AudioChunk | None = None
    first = True
    for chunk in chunks:
        if len(chunk.samples) == 0:
            continue
        if previous is not None:
            yield previous, first, False
            first = False
        previous = chunk
    if previous is not None:
        yield previous, first, True


def _shape_piece(piece: _Piece, settings: Settings) -> np.ndarray:
    """Fade the segment's outer edges and append its pause."""
    rate = piece.chunk.sample_rate
    samples = apply_fades(
        piece.chunk.samples,
        rate,
        fade_in_ms=FADE_MS if piece.first else 0.0,
        fade_out_ms=FADE_MS if piece.last else 0.0,
    )
    if piece.last and piece.segment.pause_after > 0:
        samples = np.concatenate([samples, silence(piece.segment.pause_after, rate)])
    return samples


def _language_supported(language: str, supported: tuple[str, ...]) -> bool:
    wanted = language.replace("_", "-").lower()
    for tag in supported:
        tag = tag.lower()
        if wanted == tag or wanted.split("-")[0] == tag.split("-")[0]:
            return True
    return False
