"""Segments -> engines -> audio, pipelined.

A producer task synthesizes segments in order while the consumer (whoever iterates ``render``)
post-processes, encodes and sends the previous ones; look-ahead is bounded in segments and runs
across voices and engines (a dialogue's turns are one plan). Segments come from a plan (a whole
text) or arrive over time (``TextStream``: an LLM's tokens); each carries its own voicing. When
the consumer stops (a client went away), the producer is cancelled and no further segment starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from voxserve.audio import StreamResampler, apply_fades, silence
from voxserve.audio.frames import AudioChunk
from voxserve.config import Settings
from voxserve.engines.base import Cost, Engine, Voice, Voicing
from voxserve.engines.registry import EngineRegistry
from voxserve.errors import InvalidRequestError, NoAudioError
from voxserve.request import SpeechRequest
from voxserve.synthesis.cache import SegmentCache
from voxserve.synthesis.cost import segment_cost
from voxserve.synthesis.plan import PlanOptions, Segment, plan_options
from voxserve.synthesis.scheduler import EngineScheduler, EngineStats, StreamClock
from voxserve.synthesis.ssml_plan import plan_input, spoken_text
from voxserve.synthesis.word_alignment import WordAligner
from voxserve.voices.resolution import CloneReference, VoiceResolver

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
    """A segment whose audio has been delivered, and where it sits in the output (seconds)."""

    segment: Segment
    start: float
    end: float
    """Where the next segment starts: after this one's pause."""
    speech_end: float
    """Where its speech ends, before its pause."""


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

    @property
    def ignored(self) -> tuple[str, ...]:
        """Fields the request sent that its engine accepts without honouring them."""
        return self.voicing.ignored


class SynthesisObserver(Protocol):
    """What a synthesizer reports as it works (the server turns it into Prometheus metrics)."""

    def first_audio(self, engine: str, seconds: float) -> None: ...

    def finished(self, engine: str, audio_seconds: float, wall_seconds: float) -> None: ...

    def cached(self, engine: str, hit: bool) -> None: ...

    def billed(self, engine: str, cost: Cost) -> None:
        """A paid engine's call made audio: ``cost`` is spent (once a segment, retries or not;
        a cached segment is not billed)."""


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
        self.resolver = VoiceResolver(settings, self.registry)
        self.observer = observer
        self.stats = SynthesisStats()
        self.cache = SegmentCache(int(settings.cache_mb * 2**20))
        self.aligner = WordAligner(settings.stt, lambda: self.resolver.transcriber)
        self._schedulers: dict[str, EngineScheduler] = {}

    def scheduler(self, engine: Engine) -> EngineScheduler:
        scheduler = self._schedulers.get(engine.name)
        if scheduler is None:
            scheduler = EngineScheduler(
                concurrency=engine.settings.concurrency or engine.capabilities.concurrency,
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
        return plan_options(self.settings, engine)

    def prepare(
        self, request: SpeechRequest, reference: CloneReference | None = None
    ) -> PreparedSpeech:
        """Validate a request against the settings and its engine, and plan its segments.
        Blocking (voice resolution, normalizing): async callers run it in a thread."""
        if len(request.input) > self.settings.max_input_chars:
            raise InvalidRequestError(
                f"input is {len(request.input)} characters; the maximum is "
                f"{self.settings.max_input_chars}",
                param="input",
                code="input_too_long",
            )
        voicing = self.resolver.voicing(request, reference, spoken_text(request))
        if request.wants_words:
            voicing = replace(voicing, timed_words=True)
        # No segments ("...", an emoji) is a request with nothing to say, not a bad one: clients
        # that speak an LLM's reply a sentence at a time send such pieces, and a refusal would
        # break their reply. It answers a moment of silence (``stream``); only blank input is
        # refused, by the request's own validation.
        segments = plan_input(self, request, voicing)  # SSML, or text with pause tags
        spoken = sum(len(segment.text) for segment in segments)
        check_spoken_length(spoken, self.settings.max_spoken_chars, "input", "input")
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
            iterate(prepared.segments),
            [segment.engine for segment in prepared.segments],  # an SSML <voice> may add one
            prepared.sample_rate,
            total=len(prepared.segments),
            progress=progress,
        )
        async with contextlib.aclosing(rendered) as items:
            async for item in items:
                if isinstance(item, AudioChunk):
                    yield item

    @contextlib.asynccontextmanager
    async def admit(self, engines: Iterable[Engine]) -> AsyncIterator[dict[str, StreamClock]]:
        """Stream places on each engine, by name, held together for the whole of one request:
        admitted once, before any audio, so that a later segment on another engine (a
        dialogue's next speaker) cannot be refused (429) after audio went out in a 200."""
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
        segments: AsyncIterable[Segment],
        engines: Iterable[Engine],
        sample_rate: int,
        *,
        total: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> AsyncIterator[AudioChunk | SpokenSegment]:
        """Audio chunks at ``sample_rate``, with their words in the stream's time, each segment
        followed by its ``SpokenSegment`` once fully delivered.

        Admits the request on each of ``engines`` first (every engine its segments use; raises
        OverloadedError if a queue is full), and holds the places to the end.
        """
        async with self.admit(engines) as clocks:
            for name in clocks:
                await self.registry.ensure_loaded(name)
            queue: asyncio.Queue = asyncio.Queue()
            # Unbounded queue, bounded in segments: the producer takes a place before synthesizing
            # a segment and the consumer frees it once the segment is consumed, so an engine never
            # waits on a slow client in the middle of a segment while holding its engine slot.
            ahead = asyncio.Semaphore(self.settings.lookahead)
            producer = asyncio.create_task(self._produce(segments, queue, ahead, clocks))
            resampler: StreamResampler | None = None
            position = 0  # samples delivered
            elapsed = 0.0  # seconds of audio fed to the resampler: the stream's own time
            segment_start = 0.0
            audio_by_engine: dict[str, float] = {}
            done, started = 0, time.monotonic()
            self.stats.requests += 1
            self.stats.active += 1
            try:
                while (piece := await queue.get()) is not _END:
                    if isinstance(piece, BaseException):
                        raise piece
                    if piece.last:
                        ahead.release()  # taken off the queue: the producer may go one further
                    chunk, engine = piece.chunk, piece.segment.engine
                    if resampler is None or resampler.in_rate != chunk.sample_rate:
                        resampler = StreamResampler(chunk.sample_rate, sample_rate)
                    if piece.first:
                        segment_start = elapsed
                        elapsed += piece.segment.pause_before  # before its audio (_shape_piece)
                    words = tuple(word.shifted(elapsed) for word in chunk.words)
                    elapsed += chunk.duration
                    speech_end = elapsed
                    output = resampler.process(_shape_piece(piece))
                    if piece.last:
                        elapsed += piece.segment.pause_after
                    if len(output) or words:
                        clock = clocks[engine.name]
                        if clock.first_audio_at is None and len(output):
                            clock.first_audio_at = time.monotonic()
                            if self.observer:
                                self.observer.first_audio(
                                    engine.name, clock.first_audio_at - started
                                )
                        position += len(output)
                        clock.audio_seconds += len(output) / sample_rate
                        audio_by_engine[engine.name] = (
                            audio_by_engine.get(engine.name, 0.0) + len(output) / sample_rate
                        )
                        yield AudioChunk(output, sample_rate, words)
                    if piece.last:
                        done += 1
                        yield SpokenSegment(piece.segment, segment_start, elapsed, speech_end)
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
                    for name, seconds in audio_by_engine.items():
                        self.observer.finished(name, seconds, wall)
            finally:
                self.stats.active -= 1
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer

    async def _produce(
        self,
        segments: AsyncIterable[Segment],
        queue: asyncio.Queue,
        ahead: asyncio.Semaphore,
        clocks: dict[str, StreamClock],
    ) -> None:
        contexts: dict[str, str] = {}  # engine -> this render's context id
        unspoken: NoAudioError | None = None  # the first segment an engine made no audio of
        spoken = False
        try:
            async for planned in segments:
                segment = _with_context(planned, contexts)
                engine = segment.engine
                if engine.name not in clocks:
                    raise RuntimeError(f"render was not given engine {engine.name!r} to admit")
                await ahead.acquire()
                options = segment.voicing.options
                key = (engine.name, segment.text, options, self._aligns(segment))
                # A segment spoken in a context (the segments before it) sounds different in
                # another: its audio is never cached, nor looked for.
                cacheable = options.context_id is None and self.cache.wants(segment.text)
                cached = self.cache.get(key) if cacheable else None
                if self.observer and cacheable:
                    self.observer.cached(engine.name, cached is not None)
                if cached is not None:
                    for chunk, first, last in _positioned(cached):
                        queue.put_nowait(_Piece(segment, chunk, first, last))
                    spoken = True
                    continue
                try:
                    made = await self._synthesize(segment, queue, clocks[engine.name])
                except NoAudioError as error:
                    # Text the engine cannot speak (Piper has no phonemes for "\u0660"): once
                    # audio has gone out, failing would cut the answer short, so the segment says
                    # nothing, as "..." does. A render with no audio at all is refused below.
                    logger.warning(
                        "engine %r made no audio of segment %d (%d characters)",
                        engine.name, segment.index, len(segment.text),
                    )  # fmt: skip
                    unspoken = unspoken or error
                    ahead.release()  # no piece of it will be taken off the queue
                    continue
                spoken = True
                self.stats.segments += 1
                # A book's sentences are said once: kept, they would push out of the cache the
                # short replies live clients say again, and hold its 32 MB through the book.
                if cacheable and not clocks[engine.name].background:
                    self.cache.put(key, made)
            if unspoken is not None and not spoken:
                raise unspoken
            queue.put_nowait(_END)
        except Exception as error:  # told to the consumer, which raises it in the request
            queue.put_nowait(error)

    async def _synthesize(
        self, segment: Segment, queue: asyncio.Queue, clock: StreamClock
    ) -> list[AudioChunk]:
        """One segment through its engine, in an engine slot granted by deadline."""
        scheduler = self.scheduler(segment.engine)
        made: list[AudioChunk] = []
        async with scheduler.slot(clock):
            began = time.monotonic()
            made_chunks = segment.engine.stream(segment)
            if self._aligns(segment):
                made_chunks = self.aligner.aligned(segment, made_chunks)
            chunks = _positioned_stream(made_chunks)
            async with contextlib.aclosing(chunks):
                async for chunk, first, last in chunks:
                    if first:
                        self._bill(segment)
                    made.append(chunk)
                    queue.put_nowait(_Piece(segment, chunk, first, last))
            scheduler.record(time.monotonic() - began, sum(chunk.duration for chunk in made))
        return made

    @staticmethod
    def _aligns(segment: Segment) -> bool:
        """Whether the segment's words come from aligning its audio (and it is cached apart)."""
        return segment.voicing.timed_words and not segment.engine.capabilities.word_timings

    def _bill(self, segment: Segment) -> None:
        # Here, at its first audio, the call has succeeded: the provider bills it even if the
        # client leaves mid-segment, and failed tries before it (retried in Engine.stream) made
        # nothing to bill.
        if self.observer is not None and (cost := segment_cost(segment)) is not None:
            self.observer.billed(segment.engine.name, cost)


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


def _with_context(segment: Segment, contexts: dict[str, str]) -> Segment:
    """The segment with this render's context id, for an engine that carries one and a voicing
    without its own (a dialogue gives all its turns one)."""
    voicing = segment.voicing
    if not segment.engine.capabilities.carries_context or voicing.options.context_id:
        return segment
    context = contexts.setdefault(segment.engine.name, uuid.uuid4().hex)
    options = replace(voicing.options, context_id=context)
    return replace(segment, voicing=replace(voicing, options=options))


async def iterate(items: Iterable[Segment]) -> AsyncIterator[Segment]:
    for item in items:
        yield item


def progress_report(done: int, total: int | None, audio_seconds: float, started: float) -> Progress:
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done) if total else None
    return Progress(done, total, audio_seconds, elapsed, eta)


def _positioned(chunks: Iterable[AudioChunk]) -> Iterable[tuple[AudioChunk, bool, bool]]:
    """Tag each chunk with whether it is a segment's first and last."""
    chunks = [chunk for chunk in chunks if len(chunk.samples)]
    for number, chunk in enumerate(chunks):
        yield chunk, number == 0, number == len(chunks) - 1


async def _positioned_stream(
    chunks: AsyncIterator[AudioChunk],
) -> AsyncIterator[tuple[AudioChunk, bool, bool]]:
    """As ``_positioned``, as the chunks come. Which chunk is last is known only when the
    engine ends, so the last ``FADE_MS`` of audio (what the segment's fade-out shapes) is held
    back, not a whole chunk: each chunk's audio goes on as it arrives, instead of waiting for
    the engine's next piece (a provider streaming in tenths of a second would add that much
    to the first audio)."""
    held: AudioChunk | None = None
    first = True
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            if len(chunk.samples) == 0:
                continue
            if held is not None:
                if held.sample_rate == chunk.sample_rate:
                    chunk = _joined(held, chunk)
                else:  # a change of rate mid-segment: what is held goes as it is
                    yield held, first, False
                    first = False
            sent, held = _split_tail(chunk, round(chunk.sample_rate * FADE_MS / 1000))
            if sent is not None:
                yield sent, first, False
                first = False
    if held is not None:
        yield held, first, True


def _joined(before: AudioChunk, after: AudioChunk) -> AudioChunk:
    """Two chunks of one rate as one, the words of ``after`` timed from the joined start."""
    shift = before.duration
    return AudioChunk(
        np.concatenate([before.samples, after.samples]),
        before.sample_rate,
        before.words + tuple(word.shifted(shift) for word in after.words),
    )


def _split_tail(chunk: AudioChunk, tail: int) -> tuple[AudioChunk | None, AudioChunk]:
    """``chunk`` as its audio up to its last ``tail`` samples (None if it has no more) and
    those samples; each keeps the words that start in it."""
    cut = len(chunk.samples) - tail
    if cut <= 0:
        return None, chunk
    at = cut / chunk.sample_rate
    head_words = tuple(word for word in chunk.words if word.start < at)
    tail_words = tuple(word.shifted(-at) for word in chunk.words if word.start >= at)
    return (
        AudioChunk(chunk.samples[:cut], chunk.sample_rate, head_words),
        AudioChunk(chunk.samples[cut:], chunk.sample_rate, tail_words),
    )


def _shape_piece(piece: _Piece) -> np.ndarray:
    """Apply the voicing's volume, fade the segment's outer edges and add its pauses."""
    rate = piece.chunk.sample_rate
    samples = piece.chunk.samples
    if (volume := piece.segment.voicing.volume) != 1.0:
        samples = np.clip(samples * np.float32(volume), -1.0, 1.0)
    samples = apply_fades(
        samples,
        rate,
        fade_in_ms=FADE_MS if piece.first else 0.0,
        fade_out_ms=FADE_MS if piece.last else 0.0,
    )
    if piece.first and piece.segment.pause_before > 0:
        samples = np.concatenate([silence(piece.segment.pause_before, rate), samples])
    if piece.last and piece.segment.pause_after > 0:
        samples = np.concatenate([samples, silence(piece.segment.pause_after, rate)])
    return samples
