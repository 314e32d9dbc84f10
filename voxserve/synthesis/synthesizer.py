"""Text -> segments -> engine -> audio, pipelined.

A producer task synthesizes segments in order while the consumer (whoever iterates ``render``)
post-processes, encodes and sends the previous ones; look-ahead is bounded in segments. Segments
come from a plan (a whole text) or arrive over time (``TextStream``: an LLM's tokens). When the
consumer stops (a client went away), the producer is cancelled and no further segment starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from voxserve.audio import AudioEncoder, StreamResampler, apply_fades, create_encoder, silence
from voxserve.audio.frames import AudioChunk
from voxserve.config import Settings
from voxserve.engines.base import Engine, SamplingOptions, SynthesisOptions, Voice
from voxserve.engines.registry import EngineRegistry
from voxserve.errors import EngineError, InvalidRequestError, VoxserveError
from voxserve.request import SpeechOptions, SpeechRequest
from voxserve.synthesis.cache import SegmentCache
from voxserve.synthesis.plan import PlanOptions, Segment, plan_segments
from voxserve.synthesis.scheduler import EngineScheduler, EngineStats, StreamClock
from voxserve.synthesis.threads import iterate_in_thread
from voxserve.text import normalize_text
from voxserve.voices.clip_paths import read_clip, unusable_clip
from voxserve.voices.profile import VoiceProfile
from voxserve.voices.reference import MAX_CLIP_BYTES, ReferenceLimits, prepare_reference
from voxserve.voices.references import ReferenceCache
from voxserve.voices.store import VoiceStore
from voxserve.voices.transcribe import Transcriber

logger = logging.getLogger("voxserve.synthesis")
FADE_MS = 5.0  # long enough to remove clicks at joins, too short to hear
NOTHING_TO_SAY_SECONDS = 0.15  # what a text with nothing to speak in it ("...") answers


@dataclass(frozen=True)
class Progress:
    segments_done: int
    segments_total: int | None
    """None while text is still arriving."""
    audio_seconds: float
    elapsed_seconds: float
    eta_seconds: float | None
    """Estimated seconds left, from the share of text spoken so far."""


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class SpokenSegment:
    """A segment whose audio has been delivered, and where it sits in the output."""

    segment: Segment
    start: float
    end: float


@dataclass(frozen=True)
class Voicing:
    """The engine, voice and output rate a request speaks with."""

    engine: Engine
    voice: Voice
    sample_rate: int
    options: SynthesisOptions


@dataclass(frozen=True)
class CloneReference:
    """A cleaned clip to clone and what it says."""

    path: Path
    text: str


@dataclass(frozen=True)
class PreparedSpeech:
    """A validated request with its plan; everything that can be rejected has been checked."""

    request: SpeechRequest
    voicing: Voicing
    segments: list[Segment]

    @property
    def engine(self) -> Engine:
        return self.voicing.engine

    @property
    def voice(self) -> Voice:
        return self.voicing.voice

    @property
    def sample_rate(self) -> int:
        return self.voicing.sample_rate


class SynthesisObserver(Protocol):
    """What a synthesizer reports as it works (the server turns it into Prometheus metrics)."""

    def first_audio(self, engine: str, seconds: float) -> None: ...

    def finished(self, engine: str, audio_seconds: float, wall_seconds: float) -> None: ...

    def cached(self, engine: str, hit: bool) -> None: ...


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
    def __init__(
        self,
        settings: Settings,
        registry: EngineRegistry | None = None,
        observer: SynthesisObserver | None = None,
    ):
        self.settings = settings
        self.registry = registry or EngineRegistry(settings)
        self.observer = observer
        self.stats = SynthesisStats()
        self.cache = SegmentCache(int(settings.cache_mb * 2**20))
        self._schedulers: dict[str, EngineScheduler] = {}

    def scheduler(self, engine: Engine) -> EngineScheduler:
        scheduler = self._schedulers.get(engine.name)
        if scheduler is None:
            concurrency = engine.settings.get("concurrency") or engine.capabilities.concurrency
            scheduler = EngineScheduler(
                concurrency=int(concurrency),
                max_streams=self.settings.max_streams_per_engine,
                max_queue=self.settings.max_queue,
            )
            self._schedulers[engine.name] = scheduler
        return scheduler

    def schedulers(self) -> dict[str, EngineScheduler]:
        return dict(self._schedulers)

    def engine_stats(self) -> dict[str, EngineStats]:
        """Per engine used so far: generations, average call time, realtime factor."""
        return {name: scheduler.stats for name, scheduler in self._schedulers.items()}

    def plan_options(self, engine: Engine) -> PlanOptions:
        return PlanOptions(
            max_chars=engine.capabilities.max_input_chars,
            sentence_pause=self.settings.sentence_pause,
            clause_pause=self.settings.clause_pause,
            small_first=self.settings.first_fragment_small,
        )

    @functools.cached_property
    def voices(self) -> VoiceStore:
        """The user's voice profiles (created on first use)."""
        return VoiceStore(self.settings.data_path / "voices")

    @functools.cached_property
    def references(self) -> ReferenceCache:
        return ReferenceCache(self.settings.data_path / "references")

    def voicing(self, request: SpeechOptions, reference: CloneReference | None = None) -> Voicing:
        """Check a request's voice, engine, speed and language; raise naming the bad field.

        ``reference``: a clip to clone, given with the request (it takes the place of ``voice``).
        """
        if reference is None and request.voice and _looks_like_path(request.voice):
            reference = self._path_reference(request.voice, request.model)
        if reference is not None:
            engine = self.cloning_engine(request.model, "the reference clip")
            voice = Voice("reference", engine.name, "reference clip", request.language or "")
            extra = {"reference_audio": str(reference.path), "reference_text": reference.text}
            return self._checked_voicing(engine, voice, request, request.speed, **extra)
        profile = self.voices.find(request.voice) if request.voice else None
        if profile is not None:
            return self._profile_voicing(profile, request)
        resolved = self.registry.resolve_voice(request.voice, request.model)
        return self._checked_voicing(resolved.engine, resolved.voice, request, request.speed)

    def _profile_voicing(self, profile: VoiceProfile, request: SpeechOptions) -> Voicing:
        """A profile's voice: cloned from its reference where possible, else an engine voice."""
        engine = self.registry.engine_for_model(request.model or profile.engine)
        speed = request.speed
        if "speed" not in request.model_fields_set and profile.defaults.speed:
            speed = profile.defaults.speed
        extra = {"speaker_description": profile.speaker_description}
        reference = self.voices.reference_path(profile.id) if profile.has_reference else None
        if reference and (engine.capabilities.cloning or not profile.voice):
            engine = self.cloning_engine(engine.name, f"voice {profile.id!r}")
            voice = Voice(profile.id, engine.name, profile.display_name, profile.language or "")
            # A copy by content: deleting the profile meanwhile cannot pull the clip away.
            clip = self.references.store(reference.read_bytes())
            extra |= {"reference_audio": str(clip), "reference_text": profile.transcript}
        else:
            voice = self.registry.resolve_voice(profile.voice, engine.name).voice
        return self._checked_voicing(engine, voice, request, speed, **extra)

    def cloning_engine(self, model: str | None, what: str) -> Engine:
        """The engine ``model`` names, if it can clone; else a 400 naming the engines that can."""
        engine = self.registry.engine_for_model(model)
        if engine.capabilities.cloning:
            return engine
        cloning = [
            name
            for name in self.registry.names()
            if self.registry.is_installed(name) and self.registry.get(name).capabilities.cloning
        ]
        raise InvalidRequestError(
            f"{what} needs an engine that can clone, and {engine.name!r} cannot; engines that "
            f"can: {', '.join(cloning) or 'none installed'}",
            param="voice",
            code="cloning_not_supported",
        )

    def _path_reference(self, voice: str, model: str | None) -> CloneReference:
        """A clip on the server named as ``voice``, in a directory of ``voice_paths``. The
        cheap checks come first: a request its engine cannot serve reads no file."""
        if not self.settings.voice_paths:
            raise InvalidRequestError(
                f"voice {voice!r} looks like a file path, and paths are not allowed on this "
                "server (voice_paths names the directories whose clips may be used)",
                param="voice",
                code="voice_paths_disabled",
            )
        self.cloning_engine(model, "the reference clip")
        audio = read_clip(voice, self.settings.voice_paths, MAX_CLIP_BYTES)
        try:
            return self.clone_reference(audio, None)
        except InvalidRequestError as error:
            if error.code == "invalid_audio":  # not audio: answered as any unusable path
                raise unusable_clip(voice) from error
            raise

    def clone_reference(self, audio: bytes, transcript: str | None) -> CloneReference:
        """Check and clean a clip given with a request (as its ``voice``: a refusal names that
        field); transcribe it when no transcript came."""
        limits = ReferenceLimits(
            min_seconds=self.settings.reference_min_seconds,
            max_seconds=self.settings.reference_max_seconds,
        )
        try:
            clip = prepare_reference(audio, limits)
        except InvalidRequestError as error:
            raise InvalidRequestError(error.message, param="voice", code=error.code) from error
        text = (transcript or "").strip() or self.transcriber.transcribe(clip)
        return CloneReference(self.references.store(clip.to_wav_bytes()), text)

    @functools.cached_property
    def transcriber(self) -> Transcriber:
        return Transcriber(**self.settings.stt.model_dump())

    def _checked_voicing(
        self, engine: Engine, voice: Voice, request: SpeechOptions, speed: float, **extra: Any
    ) -> Voicing:
        capabilities = engine.capabilities
        low, high = capabilities.speed_range
        if not low <= speed <= high:
            raise InvalidRequestError(
                f"speed {speed} is outside {engine.name}'s range {low}-{high}",
                param="speed",
            )
        if request.language and not language_supported(request.language, capabilities.languages):
            raise InvalidRequestError(
                f"engine {engine.name!r} does not speak {request.language!r}; it speaks "
                f"{', '.join(capabilities.languages)}",
                param="language",
                code="unsupported_language",
            )
        if request.sampling is not None and not capabilities.sampling:
            raise InvalidRequestError(
                f"engine {engine.name!r} does not sample, so it takes no sampling settings",
                param="sampling",
                code="sampling_not_supported",
            )
        options = SynthesisOptions(
            voice=voice.id,
            speed=speed,
            language=request.language,
            instructions=request.instructions,
            sampling=SamplingOptions(**request.sampling.model_dump()) if request.sampling else None,
            **extra,
        )
        sample_rate = request.sample_rate or voice.sample_rate or capabilities.sample_rate
        return Voicing(engine, voice, sample_rate, options)

    def prepare(
        self, request: SpeechRequest, reference: CloneReference | None = None
    ) -> PreparedSpeech:
        """Validate a request against the settings and its engine, and plan its segments."""
        if len(request.input) > self.settings.max_input_chars:
            raise InvalidRequestError(
                f"input is {len(request.input)} characters; the maximum is "
                f"{self.settings.max_input_chars}",
                param="input",
                code="input_too_long",
            )
        voicing = self.voicing(request, reference)
        text = normalize_text(request.input) if request.normalize else request.input
        check_spoken_length(len(text), self.settings.max_spoken_chars, "input", "input")
        # No segments ("...", an emoji) is a request with nothing to say, not a bad one: clients
        # that speak an LLM's reply a sentence at a time send such pieces, and a refusal would
        # break their reply. It answers a moment of silence (``stream``); only blank input is
        # refused, by the request's own validation.
        segments = plan_segments(text, voicing.voice.id, self.plan_options(voicing.engine))
        return PreparedSpeech(request, voicing, segments)

    async def stream(
        self, speech: SpeechRequest | PreparedSpeech, progress: ProgressCallback | None = None
    ) -> AsyncIterator[AudioChunk]:
        """Audio at the output rate, with pauses and fades, as soon as each piece is ready."""
        prepared = speech if isinstance(speech, PreparedSpeech) else self.prepare(speech)
        if not prepared.segments:
            # Audio of the requested format either way: players and clients expect some.
            rate = prepared.sample_rate
            yield AudioChunk(silence(NOTHING_TO_SAY_SECONDS, rate), rate)
            return
        rendered = self.render(
            prepared.voicing, iterate(prepared.segments), len(prepared.segments), progress
        )
        async with contextlib.aclosing(rendered) as items:
            async for item in items:
                if isinstance(item, AudioChunk):
                    yield item

    async def stream_encoded(
        self, speech: SpeechRequest | PreparedSpeech, progress: ProgressCallback | None = None
    ) -> AsyncIterator[bytes]:
        """The request's audio in its ``response_format``, encoded incrementally."""
        prepared = speech if isinstance(speech, PreparedSpeech) else self.prepare(speech)
        async with contextlib.aclosing(self.stream(prepared, progress)) as chunks:
            async for data in encode_chunks(
                chunks, prepared.request.response_format, prepared.sample_rate
            ):
                yield data

    @contextlib.asynccontextmanager
    async def admit(self, engines: Iterable[Engine]) -> AsyncIterator[dict[str, StreamClock]]:
        """Stream places on each engine, by name, held together for a request made of several
        renders (a dialogue's turns): admitted once, before any audio, so that a later turn
        cannot be refused (429) after the first turn's audio went out in a 200."""
        async with contextlib.AsyncExitStack() as held:
            clocks: dict[str, StreamClock] = {}
            for engine in engines:
                if engine.name not in clocks:
                    clocks[engine.name] = await held.enter_async_context(self._admission(engine))
            yield clocks

    @contextlib.asynccontextmanager
    async def _admission(self, engine: Engine) -> AsyncIterator[StreamClock]:
        async with self.scheduler(engine).stream() as clock, self.registry.in_use(engine.name):
            yield clock

    async def render(
        self,
        voicing: Voicing,
        segments: AsyncIterable[Segment],
        total: int | None = None,
        progress: ProgressCallback | None = None,
        admitted: StreamClock | None = None,
    ) -> AsyncIterator[AudioChunk | SpokenSegment]:
        """Audio chunks, each segment followed by its ``SpokenSegment`` once fully delivered.

        Waits for a stream place on the engine first (raises OverloadedError if the queue is
        full), unless the caller holds one already (``admitted``, from `admit`).
        """
        engine, sample_rate = voicing.engine, voicing.sample_rate
        if engine.capabilities.carries_context and voicing.options.context_id is None:
            # This render's segments share one voice (a dialogue gives all its turns one id).
            options = replace(voicing.options, context_id=uuid.uuid4().hex)
            voicing = replace(voicing, options=options)
        scheduler = self.scheduler(engine)
        async with contextlib.AsyncExitStack() as held:
            clock = admitted or await held.enter_async_context(self._admission(engine))
            await self.registry.ensure_loaded(engine.name)
            queue: asyncio.Queue = asyncio.Queue()
            # Unbounded queue, bounded in segments: the producer takes a place before synthesizing
            # a segment and the consumer frees it once the segment is consumed, so an engine never
            # waits on a slow client in the middle of a segment while holding its engine slot.
            ahead = asyncio.Semaphore(self.settings.lookahead)
            producer = asyncio.create_task(
                self._produce(voicing, segments, queue, ahead, clock, scheduler)
            )
            resampler: StreamResampler | None = None
            position = 0  # samples delivered
            segment_start = 0
            done, started = 0, time.monotonic()
            self.stats.requests += 1
            self.stats.active += 1
            try:
                while (piece := await queue.get()) is not _END:
                    if isinstance(piece, BaseException):
                        raise piece
                    if piece.last:
                        ahead.release()  # taken off the queue: the producer may go one further
                    if resampler is None or resampler.in_rate != piece.chunk.sample_rate:
                        resampler = StreamResampler(piece.chunk.sample_rate, sample_rate)
                    if piece.first:
                        segment_start = position
                    output = resampler.process(_shape_piece(piece))
                    if len(output):
                        if clock.first_audio_at is None:
                            clock.first_audio_at = time.monotonic()
                            if self.observer:
                                self.observer.first_audio(
                                    engine.name, clock.first_audio_at - started
                                )
                        position += len(output)
                        clock.audio_seconds += len(output) / sample_rate
                        yield AudioChunk(output, sample_rate)
                    if piece.last:
                        done += 1
                        yield SpokenSegment(
                            piece.segment, segment_start / sample_rate, position / sample_rate
                        )
                        if progress is not None:
                            progress(progress_report(done, total, position / sample_rate, started))
                if resampler is not None:
                    tail = resampler.process(np.zeros(0, np.float32), last=True)
                    if len(tail):
                        position += len(tail)
                        yield AudioChunk(tail, sample_rate)
                self.stats.audio_seconds += position / sample_rate
                if self.observer:
                    wall = time.monotonic() - started
                    self.observer.finished(engine.name, position / sample_rate, wall)
            finally:
                self.stats.active -= 1
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer

    async def _produce(
        self,
        voicing: Voicing,
        segments: AsyncIterable[Segment],
        queue: asyncio.Queue,
        ahead: asyncio.Semaphore,
        clock: StreamClock,
        scheduler: EngineScheduler,
    ) -> None:
        engine = voicing.engine
        unspoken: Segment | None = None  # the first segment the engine made no audio of
        spoken = False
        try:
            async for segment in segments:
                await ahead.acquire()
                key = (engine.name, segment.text, voicing.options)
                cacheable = self.cache.wants(segment.text)
                cached = self.cache.get(key) if cacheable else None
                if self.observer and cacheable:
                    self.observer.cached(engine.name, cached is not None)
                if cached is not None:
                    for chunk, first, last in _with_position(iter(cached)):
                        queue.put_nowait(_Piece(segment, chunk, first, last))
                    spoken = True
                    continue
                made: list[AudioChunk] = []
                async with scheduler.slot(clock):
                    began = time.monotonic()
                    chunks = iterate_in_thread(
                        _with_position(engine.synthesize(segment.text, voicing.options))
                    )
                    async with contextlib.aclosing(chunks):
                        async for chunk, first, last in chunks:
                            made.append(chunk)
                            queue.put_nowait(_Piece(segment, chunk, first, last))
                    audio_seconds = sum(chunk.duration for chunk in made)
                    scheduler.record(time.monotonic() - began, audio_seconds)
                if audio_seconds == 0:
                    # Text the engine cannot speak (Piper has no phonemes for "\u0660"): once
                    # audio has gone out, failing would cut the answer short, so the segment says
                    # nothing, as "..." does. A render with no audio at all is refused below.
                    logger.warning(
                        "engine %r made no audio of segment %d (%d characters)",
                        engine.name, segment.index, len(segment.text),
                    )  # fmt: skip
                    unspoken = unspoken or segment
                    ahead.release()  # no piece of it will be taken off the queue
                    continue
                spoken = True
                self.stats.segments += 1
                if cacheable:
                    self.cache.put(key, made)
            if unspoken is not None and not spoken:
                raise _no_audio(engine, unspoken)
            queue.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except VoxserveError as error:
            queue.put_nowait(error)
        except Exception as error:  # an engine bug must fail this request, not the server
            wrapped = EngineError(f"engine {engine.name!r} failed: {error}", code="engine_failed")
            wrapped.__cause__ = error
            queue.put_nowait(wrapped)


def check_spoken_length(length: int, limit: int, param: str, what: str) -> None:
    """Refuse text that reads longer than ``limit`` once normalized: numbers and symbols spelled
    out read about five times longer than written, and would run for minutes."""
    if length > limit:
        raise InvalidRequestError(
            f"{what} reads as {length} characters once numbers and symbols are spelled out; "
            f"the maximum is {limit}",
            param=param,
            code="input_too_long",
        )


def _no_audio(engine: Engine, segment: Segment) -> VoxserveError:
    """A request its engine made no audio of. An engine that samples may speak it on another try
    (the engine failed: 500); one that does not would make the same nothing of it again, so the
    text is what it cannot speak (a 400, which clients do not retry)."""
    if engine.capabilities.sampling:
        return EngineError(
            f"engine {engine.name!r} produced no audio for segment {segment.index}",
            code="no_audio",
        )
    return InvalidRequestError(
        f"engine {engine.name!r} made no audio of this input: it cannot speak its characters",
        param="input",
        code="unspeakable_input",
    )


async def encode_chunks(
    chunks: AsyncIterable[AudioChunk], audio_format: str, sample_rate: int
) -> AsyncIterator[bytes]:
    """Encode audio as it comes; real codecs run in a worker thread, keeping the loop free."""
    encoder = create_encoder(audio_format, sample_rate)
    async for chunk in chunks:
        if data := await encode(encoder, chunk.samples):
            yield data
    tail = encoder.finish()
    if tail:
        yield tail


async def encode(encoder: AudioEncoder, samples: np.ndarray) -> bytes:
    if encoder.format in ("pcm", "wav"):  # raw PCM costs microseconds
        return encoder.encode(samples)
    return await asyncio.to_thread(encoder.encode, samples)


async def iterate(items: Iterable[Segment]) -> AsyncIterator[Segment]:
    for item in items:
        yield item


def progress_report(done: int, total: int | None, audio_seconds: float, started: float) -> Progress:
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done) if total else None
    return Progress(done, total, audio_seconds, elapsed, eta)


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


def _shape_piece(piece: _Piece) -> np.ndarray:
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


def _looks_like_path(voice: str) -> bool:
    return "/" in voice or "\\" in voice or voice.startswith("~")


def language_supported(language: str, supported: tuple[str, ...]) -> bool:
    wanted = language.replace("_", "-").lower()
    for tag in supported:
        tag = tag.lower()
        if wanted == tag or wanted.split("-")[0] == tag.split("-")[0]:
            return True
    return False
