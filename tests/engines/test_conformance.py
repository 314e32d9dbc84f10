"""The conformance suite: what every engine promises, checked on every installed engine.

Each engine is an ``EngineCase``: an instance built and loaded once a session, one of its voices,
a synthesizer serving it alone, and, where there is one, request fields it makes no audio of.
The checks, on each:

1. voices and capabilities come without loading, and without importing a heavy library;
2. declared capabilities are honest: what an engine does not declare is refused with a 400
   naming the field, what it declares works; ``instructions`` are accepted everywhere, and
   reported ignored where they are not followed;
3. closing a stream takes under 200 ms and starts no further engine work;
4. word timings are ordered and inside the audio, from the engine and in the stream's time;
5. no audio is an error: 400 for an engine that does not sample, 500 for one that does;
6. a passing failure before any audio is tried again; after audio, or not passing, it fails.

A check of a capability an engine does not declare checks the other side (no word timings
declared: no words come), so every check asserts something on every engine.

Every engine in the registry (``ENGINE_CLASSES``) that is installed is a case, so registering an
engine puts it here; the suite then asks for its case, a session-scoped fixture named
``<name>_case`` that builds and loads it once (reusing the engine's own fixtures)::

    @pytest.fixture(scope="session")
    def kokoro_case(tmp_path_factory) -> EngineCase:
        engine = KokoroEngine({"voices_dir": ...})
        engine.load()
        return engine_case(engine, "af_heart", tmp_path_factory, unspoken={"input": "..."})
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Container, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.engines.conftest import load_csm, load_higgs
from tests.engines.test_kokoro_torch import torch_files  # noqa: F401 (a fixture)
from tests.fakes import FakeEngine, fake_voicing
from tests.providers.alltalk_server import AllTalkServer, alltalk_service  # noqa: F401 (a fixture)
from tests.providers.edge_server import EdgeServer, edge_service  # noqa: F401 (a fixture)
from tests.providers.elevenlabs_server import KEY as ELEVENLABS_KEY
from tests.providers.elevenlabs_server import (  # noqa: F401 (a fixture)
    ElevenLabsServer,
    elevenlabs_service,
)
from tests.providers.openai_server import KEY as OPENAI_KEY
from tests.providers.openai_server import OpenAIServer, openai_service  # noqa: F401 (a fixture)
from tests.providers.zonos_server import KEY as ZYPHRA_KEY
from tests.providers.zonos_server import ZonosServer, zonos_service  # noqa: F401 (a fixture)
from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.config import Settings
from voxserve.engines.base import BlockingEngine, Capabilities, Engine, Segment, SynthesisOptions
from voxserve.engines.higgs.random_model import CheckpointPaths
from voxserve.engines.registry import ENGINE_CLASSES, EngineRegistry, engine_class
from voxserve.engines.runpod import RunpodEngine
from voxserve.errors import EngineError, InvalidRequestError, NoAudioError
from voxserve.request import Sampling, SpeechOptions, SpeechRequest
from voxserve.synthesis.synthesizer import PreparedSpeech, Progress, Synthesizer
from voxserve.voices.resolution import CloneReference

BACKENDS = ["kokoro_torch"]
"""Second backends of a registered engine (``kokoro`` with ``backend = "torch"``), a case each:
what `make test` installs is tested."""
ENGINES = (
    ["fake", "fake_capable"]
    + [name for name in ENGINE_CLASSES if engine_class(name).is_installed()]
    + BACKENDS
)
"""The fakes, every installed engine of the registry and the second backends; each has a
fixture ``<name>_case`` (an engine registered without one fails here, asking for it)."""

TEXT = "The birds sing at dawn."
"""One segment for every engine."""
TWO_SENTENCES = "The birds sing at dawn. The river runs to the sea."
"""Two segments through a synthesizer."""
LONG_TEXT = (
    "The birds sing at dawn. The river runs to the sea. A cold wind blows from the north. "
    "The lamps are lit at dusk. We walk home along the shore. The night is calm and clear."
)
"""More segments than a synthesizer looks ahead; within every engine's input limit as one."""
SPEEDS = (0.25, 4.0)
"""What ``SpeechOptions.speed`` takes."""
FOREIGN = ("sw", "fi", "is", "cy")
"""Languages to ask for that an engine does not speak (the first none of its voices speaks)."""
CLOSE_WITHIN = 0.2
"""Seconds closing a stream may take: the issue's bound (the close must not wait for the engine
to finish its work)."""
WORD_TOLERANCE = 0.02
"""Seconds a word's end may pass the audio's end by (resampling's edge)."""
HEAVY = ("torch", "transformers", "onnxruntime")
"""Libraries an engine loads with its model, never to list its voices or capabilities."""


@dataclass(frozen=True)
class EngineCase:
    """One engine as the checks see it."""

    engine: Engine
    """Loaded, and shared by the session: a check patches it only for itself (monkeypatch)."""
    voice: str
    synthesizer: Synthesizer
    """Serves ``engine`` alone, without a cache: every request reaches the engine."""
    fresh: Callable[[], Engine]
    """A new instance configured as ``engine``, not loaded."""
    unspoken: Mapping[str, Any] | None = None
    """Request fields the engine makes no audio of; None where it has none (the check then
    silences it by hand, to show that the base contract refuses no audio)."""


def engine_case(
    engine: Engine,
    voice: str,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    fresh: Callable[[], Engine] | None = None,
    unspoken: Mapping[str, Any] | None = None,
) -> EngineCase:
    """The case of a loaded ``engine``; ``fresh`` defaults to its class on its settings."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp(f"conformance-{engine.name}"),
        default_engine=engine.name,
        default_voice=voice,
        cache_mb=0,
    )
    registry = EngineRegistry(settings)
    registry.register(engine)
    fresh = fresh or functools.partial(type(engine), engine.settings, data_dir=engine.data_dir)
    return EngineCase(engine, voice, Synthesizer(settings, registry), fresh, unspoken)


# The engines


class CapableFake(FakeEngine):
    """The fake declaring all the checks look at: it streams (four chunks a call), samples,
    clones, follows instructions, and times its words (spread over the chunks they fall in)."""

    def __init__(self) -> None:
        super().__init__(
            chunks=4, delay=0.005, cloning=True, sampling=True, instructions=True, silent_on="Hush"
        )

    def describe(self) -> Capabilities:
        return replace(super().describe(), word_timings=True)

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        words = text.split()
        bounds = [number * len(words) // self.chunks for number in range(self.chunks + 1)]
        with contextlib.closing(super().synthesize(text, options)) as chunks:
            for number, chunk in enumerate(chunks):
                share = words[bounds[number] : bounds[number + 1]]
                step = chunk.duration / max(len(share), 1)
                timed = tuple(
                    WordTiming(word, place * step, (place + 0.8) * step)
                    for place, word in enumerate(share)
                )
                yield AudioChunk(chunk.samples, chunk.sample_rate, timed)


@pytest.fixture(scope="session")
def fake_case(tmp_path_factory: pytest.TempPathFactory) -> EngineCase:
    """The fake as it is by default: one chunk, nothing optional declared."""

    def fresh() -> FakeEngine:
        return FakeEngine(delay=0.01, silent_on="Hush")

    engine = fresh()
    engine.load()
    return engine_case(engine, "tone", tmp_path_factory, fresh=fresh, unspoken={"input": "Hush."})


@pytest.fixture(scope="session")
def fake_capable_case(tmp_path_factory: pytest.TempPathFactory) -> EngineCase:
    engine = CapableFake()
    engine.load()
    return engine_case(
        engine, "tone", tmp_path_factory, fresh=CapableFake, unspoken={"input": "Hush."}
    )


@pytest.fixture(scope="session")
def piper_case(
    piper_synthesizer: Synthesizer, tmp_path_factory: pytest.TempPathFactory
) -> EngineCase:
    """The real joe voice, the session's own instance (its weights loaded once)."""
    engine = piper_synthesizer.registry.get("piper")
    engine.load()
    # Piper has no phonemes for an Arabic-Indic digit (normalized, it would be read as a word).
    return engine_case(
        engine, "joe", tmp_path_factory, unspoken={"input": "\u0660", "normalize": False}
    )


@pytest.fixture(scope="session")
def higgs_case(
    higgs_endless_checkpoint: CheckpointPaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineCase]:
    """The tiny random model that never ends its stream, capped at 40 steps: every call gives
    a few chunks (4, then 10 frames each), in a fraction of a second."""
    engine = load_higgs(
        higgs_endless_checkpoint, seed=3, first_chunk_frames=4, chunk_frames=10, max_new_tokens=40
    )
    # One step is the opening column only: no frame, no audio.
    yield engine_case(
        engine, "higgs", tmp_path_factory, unspoken={"sampling": Sampling(max_new_tokens=1)}
    )
    engine.unload()


@pytest.fixture(scope="session")
def csm_case(
    csm_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineCase]:
    """The tiny random CSM, whose stream never ends by itself, capped at 1.6 s (20 frames) a
    segment: every call gives a few chunks (2, then 4 frames each), in a fraction of a second."""
    engine = load_csm(csm_checkpoint, max_audio_seconds=1.6)
    # Every frame is audio: there is no input it makes nothing of.
    yield engine_case(engine, "csm_0", tmp_path_factory)
    engine.unload()


@pytest.fixture(scope="session")
def chatterbox_case(
    chatterbox_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> EngineCase:
    """The tiny random Chatterbox, 12 tokens a segment at most, decoded every 6: a few chunks a
    call. Every token it samples is speech or ignored: there is no input it makes nothing of."""
    return engine_case(chatterbox_engine, "chatterbox", tmp_path_factory)


@pytest.fixture(scope="session")
def runpod_case(worker_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineCase]:
    """RunPod against the SDK's local API server running our worker (with Piper: 22050 Hz)."""
    settings = {"base_url": worker_api, "voices": ["joe"], "sample_rate": 22050}
    engine = RunpodEngine({"api_key": "rp-test-key", **settings})
    engine.load()
    yield engine_case(engine, "joe", tmp_path_factory)
    engine.unload()


@pytest.fixture(scope="session")
def kokoro_case(kokoro_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> EngineCase:
    """The real packaged model, with its one male voice (it reads English as English)."""
    # espeak-ng has no phonemes for an Arabic-Indic digit (normalized, it would be a word).
    return engine_case(
        kokoro_engine, "jm_kumo", tmp_path_factory, unspoken={"input": "\u0660", "normalize": False}
    )


@pytest.fixture(scope="session")
def kokoro_torch_case(
    torch_files: tuple[Path, Path, Path],  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> EngineCase:
    """Kokoro's torch backend on a random KModel (tests/engines/test_kokoro_torch.py)."""
    from voxserve.engines.kokoro import KokoroEngine

    weights, config, voices = torch_files
    engine = KokoroEngine({
        "backend": "torch", "device": "cpu", "torch_model_path": weights,
        "torch_config_path": config, "voices_path": voices,
    })  # fmt: skip
    engine.load()
    # misaki reads even an Arabic-Indic digit (as a number): no real input it makes nothing of.
    return engine_case(engine, "af_heart", tmp_path_factory)


@pytest.fixture(scope="session")
def edge_case(
    edge_service: EdgeServer,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> EngineCase:
    """Edge against the service's stand-in on loopback (Piper's speech, as MP3)."""
    from voxserve.engines.edge import EdgeEngine

    engine = EdgeEngine(data_dir=tmp_path_factory.mktemp("edge-data"))
    engine.load()
    return engine_case(engine, "en-US-GuyNeural", tmp_path_factory)


@pytest.fixture(scope="session")
def openai_case(
    openai_service: OpenAIServer,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> EngineCase:
    """OpenAI (gpt-4o-mini-tts, server-sent events) against its API's stand-in on loopback
    (Piper's speech). Narrowed to English: OpenAI's voices speak every language FOREIGN names."""
    from voxserve.engines.openai_speech import OpenAIEngine

    settings = {"api_key": OPENAI_KEY, "base_url": openai_service.url, "languages": ["en"]}
    engine = OpenAIEngine(settings)
    engine.load()
    return engine_case(engine, "alloy", tmp_path_factory)


@pytest.fixture(scope="session")
def openai_compatible_case(
    openai_service: OpenAIServer,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> EngineCase:
    """A server speaking OpenAI's API (the stand-in, tts-1, raw pcm), its voices configured."""
    from voxserve.engines.openai_speech import OpenAICompatibleEngine

    engine = OpenAICompatibleEngine({"base_url": openai_service.url, "api_key": OPENAI_KEY,
                                     "model": "tts-1", "voices": ["alloy"]})  # fmt: skip
    engine.load()
    return engine_case(engine, "alloy", tmp_path_factory)


@pytest.fixture(scope="session")
def alltalk_case(
    alltalk_service: AllTalkServer,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> EngineCase:
    """AllTalk's streaming route on its stand-in (XTTS' WAV stream of Piper's speech); its voice
    configured too, for the instance that lists voices before it is loaded."""
    from voxserve.engines.alltalk import AllTalkEngine

    engine = AllTalkEngine({"base_url": alltalk_service.url, "voices": ["female_01.wav"]})
    engine.load()
    return engine_case(engine, "female_01.wav", tmp_path_factory)


@pytest.fixture(scope="session")
def zonos_case(
    zonos_service: ZonosServer,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> EngineCase:
    """Zyphra's API on its stand-in (Piper's speech as 44.1 kHz WAV); it clones the suite's
    reference clip."""
    from voxserve.engines.zonos import ZonosEngine

    engine = ZonosEngine({"api_key": ZYPHRA_KEY, "base_url": zonos_service.url})
    engine.load()
    return engine_case(engine, "american_female", tmp_path_factory)


@pytest.fixture(scope="session")
def elevenlabs_case(
    elevenlabs_service: ElevenLabsServer,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> EngineCase:
    """ElevenLabs' timestamped stream on its stand-in (Piper's speech as 24 kHz pcm, a character
    alignment spread over it), with a premade voice."""
    from voxserve.engines.elevenlabs import ElevenLabsEngine

    engine = ElevenLabsEngine({"api_key": ELEVENLABS_KEY, "base_url": elevenlabs_service.url})
    engine.load()
    return engine_case(engine, "21m00Tcm4TlvDq8ikWAM", tmp_path_factory)


@pytest.fixture(scope="session", params=ENGINES)
def case(request: pytest.FixtureRequest) -> EngineCase:
    return request.getfixturevalue(f"{request.param}_case")


# Helpers


def speech(case: EngineCase, text: str = TEXT, **fields: Any) -> SpeechRequest:
    return SpeechRequest(input=text, model=case.engine.name, voice=case.voice, **fields)


async def prepare(
    case: EngineCase, request: SpeechRequest, reference: CloneReference | None = None
) -> PreparedSpeech:
    return await asyncio.to_thread(case.synthesizer.prepare, request, reference)


async def segment(case: EngineCase, text: str = TEXT, **fields: Any) -> Segment:
    """``text`` as one segment, voiced as resolution voices a request with ``fields``."""
    options = SpeechOptions(model=case.engine.name, voice=case.voice, **fields)
    voicing = await case.synthesizer.resolver.resolve(options)
    return Segment(0, text, voicing, 0.0)


async def collect(stream: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    async with contextlib.aclosing(stream) as chunks:
        return [chunk async for chunk in chunks]


async def spoken(case: EngineCase, speech: SpeechRequest | PreparedSpeech) -> list[AudioChunk]:
    """A request's chunks through the case's synthesizer."""
    return await collect(case.synthesizer.stream(speech))


def seconds(chunks: list[AudioChunk]) -> float:
    return sum(chunk.duration for chunk in chunks)


class Probe:
    """What an engine is doing: its calls, the audible chunks they made, the calls that ended (ran
    out, failed or were closed), and the options each call got. It wraps where the work happens:
    a ``BlockingEngine``'s ``synthesize`` (run in a thread), else ``generate``."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch):
        self.calls = self.chunks = self.ended = 0
        self.options: list[SynthesisOptions] = []
        if isinstance(engine, BlockingEngine):
            monkeypatch.setattr(engine, "synthesize", self._blocking(engine.synthesize))
        else:
            monkeypatch.setattr(engine, "generate", self._async(engine.generate))

    def _blocking(self, synthesize: Callable) -> Callable:
        def probed(text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
            # Counted when made, on the loop, not when its first step runs in a thread: a step
            # handed to the thread pool before a close may start after it.
            self.calls += 1
            self.options.append(options)
            return _Watched(self, synthesize(text, options))

        return probed

    def _async(self, generate: Callable) -> Callable:
        async def probed(segment: Segment) -> AsyncIterator[AudioChunk]:
            self.calls += 1
            self.options.append(segment.voicing.options)
            try:
                async with contextlib.aclosing(generate(segment)) as chunks:
                    async for chunk in chunks:
                        self.chunks += bool(len(chunk.samples))
                        yield chunk
            finally:
                self.ended += 1

        return probed

    async def settled(self) -> None:
        """Wait until every call has ended (a step under way in a thread runs to its end)."""
        for _ in range(3000):  # 30 s, against a hang: not a measure
            if self.ended == self.calls:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{self.calls - self.ended} engine calls never ended")


class _Watched:
    """A blocking engine call's chunks, counted for a ``Probe``; ended once run out, failed or
    closed (closed even before its first step, which a generator's ``finally`` would miss)."""

    def __init__(self, probe: Probe, chunks: Iterator[AudioChunk]):
        self.probe, self.chunks, self.done = probe, chunks, False

    def __iter__(self) -> Iterator[AudioChunk]:
        return self

    def __next__(self) -> AudioChunk:
        try:
            chunk = next(self.chunks)
        except BaseException:
            self._end()
            raise
        self.probe.chunks += bool(len(chunk.samples))
        return chunk

    def close(self) -> None:
        try:
            getattr(self.chunks, "close", lambda: None)()
        finally:
            self._end()

    def _end(self) -> None:
        if not self.done:
            self.done = True
            self.probe.ended += 1


def failing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, calls_failing: Container[int], *,
    after_audio: bool, retryable: bool,
) -> list[int]:  # fmt: skip
    """Make the engine's calls numbered in ``calls_failing`` (from 1) raise an ``EngineError``,
    before any audio or after its first chunk; returns each call's segment index, as they come."""
    generate = engine.generate
    calls: list[int] = []

    async def flaky(segment: Segment) -> AsyncIterator[AudioChunk]:
        calls.append(segment.index)
        async with contextlib.aclosing(generate(segment)) as chunks:
            if len(calls) in calls_failing:
                if after_audio:
                    yield await anext(chunks)
                raise EngineError("the upstream dropped the connection", retryable=retryable)
            async for chunk in chunks:
                yield chunk

    monkeypatch.setattr(engine, "generate", flaky)
    return calls


def silence(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine, making no audio of anything: a blocking engine's ``synthesize`` yields
    nothing (its thread hand-off still runs), another's ``generate`` does."""
    if isinstance(engine, BlockingEngine):
        monkeypatch.setattr(engine, "synthesize", lambda text, options: iter(()))
    else:

        async def nothing(segment: Segment) -> AsyncIterator[AudioChunk]:
            for chunk in ():
                yield chunk

        monkeypatch.setattr(engine, "generate", nothing)


def check_words(words: list[WordTiming], total: float, text: str) -> None:
    """Each word within the audio and after the last one's start, its text found in ``text``
    after the last one's."""
    assert words, "an engine that declares word_timings gave no words"
    starts = [word.start for word in words]
    assert starts == sorted(starts), starts
    for word in words:
        assert 0 <= word.start <= word.end <= total + WORD_TOLERANCE, (word, total)
    position = 0
    for word in words:
        found = text.find(word.text, position)
        assert word.text and found >= 0, (word.text, text[position:])
        position = found + len(word.text)


# 1. Voices are listed without loading

LISTING = """
import json, sys
from voxserve.engines.registry import engine_class
name, settings, data_dir = json.loads(sys.argv[1])
engine = engine_class(name)(settings, data_dir=data_dir)
engine.capabilities, engine.voices()
print(json.dumps(sorted(sys.modules)))
"""


def test_voices_and_capabilities_come_without_loading(case, monkeypatch):
    engine = case.fresh()

    def refuse() -> None:
        raise AssertionError("load() ran")

    monkeypatch.setattr(engine, "load", refuse)
    voices = engine.voices()
    capabilities = engine.capabilities
    assert capabilities == case.engine.capabilities  # the same before loading as after
    assert engine.find_voice(case.voice) is not None
    for voice in voices:
        assert voice.engine == engine.name
        assert set(voice.speaks()) <= set(capabilities.languages), voice
    name = engine.name
    if name in ENGINE_CLASSES:  # and in a fresh interpreter, no heavy library came with them
        data_dir = str(engine.data_dir) if engine.data_dir else None
        settings = engine.settings.model_dump(mode="json")
        argument = json.dumps([name, settings, data_dir])
        listed = subprocess.run(
            [sys.executable, "-c", LISTING, argument], capture_output=True, text=True, check=True
        )
        imported = set(json.loads(listed.stdout))
        assert not imported & set(HEAVY), f"{name} imported {sorted(imported & set(HEAVY))}"


# 2. Declared capabilities are honest


async def test_speeds_outside_the_range_are_refused_and_inside_it_work(case):
    low, high = case.engine.capabilities.speed_range
    for speed in (low / 2, high * 2):
        if SPEEDS[0] <= speed <= SPEEDS[1]:  # one a request may ask for
            with pytest.raises(InvalidRequestError) as refused:
                await prepare(case, speech(case, speed=speed))
            assert refused.value.param == "speed"
    slowest, fastest = max(low, SPEEDS[0]), min(high, SPEEDS[1])
    slow = seconds(await collect(case.engine.stream(await segment(case, speed=slowest))))
    fast = seconds(await collect(case.engine.stream(await segment(case, speed=fastest))))
    assert slow >= fast > 0
    if slowest < fastest:
        assert slow > fast


async def test_a_language_no_voice_speaks_is_refused_and_the_voices_own_works(case):
    capabilities = case.engine.capabilities
    spoken_by = [voice.speaks() or capabilities.languages for voice in case.engine.voices()]
    bare = {tag.split("-")[0].lower() for tags in spoken_by for tag in tags}
    foreign = next(language for language in FOREIGN if language not in bare)
    with pytest.raises(InvalidRequestError) as refused:
        await prepare(case, speech(case, language=foreign))
    assert (refused.value.param, refused.value.code) == ("language", "unsupported_language")
    voice = case.engine.find_voice(case.voice)
    own = (voice.speaks() or capabilities.languages)[0]
    assert seconds(await spoken(case, speech(case, language=own))) > 0


async def test_sampling_is_refused_or_repeatable_with_a_seed(case, monkeypatch):
    sampling = Sampling(seed=7)
    if not case.engine.capabilities.sampling:
        with pytest.raises(InvalidRequestError) as refused:
            await prepare(case, speech(case, sampling=sampling))
        assert (refused.value.param, refused.value.code) == ("sampling", "sampling_not_supported")
        return
    probe = Probe(case.engine, monkeypatch)
    first, again = [
        await collect(case.engine.stream(await segment(case, sampling=sampling))) for _ in range(2)
    ]
    audio = np.concatenate([chunk.samples for chunk in first])
    assert len(audio) and np.array_equal(audio, np.concatenate([c.samples for c in again]))
    assert [options.sampling for options in probe.options] == [sampling, sampling]


async def test_cloning_is_refused_or_speaks_from_the_clip(case, reference_wav: Path):
    reference = CloneReference(reference_wav, "A clip to clone.")
    if not case.engine.capabilities.cloning:
        with pytest.raises(InvalidRequestError) as refused:
            await prepare(case, speech(case), reference)
        assert (refused.value.param, refused.value.code) == ("voice", "cloning_not_supported")
        return
    prepared = await prepare(case, speech(case), reference)
    assert prepared.voicing.options.reference_audio == str(reference_wav)
    assert seconds(await spoken(case, prepared)) > 0


async def test_instructions_are_followed_or_reported_ignored(case, monkeypatch):
    instructions = "Speak softly, like a late-night radio host."
    probe = Probe(case.engine, monkeypatch)
    prepared = await prepare(case, speech(case, instructions=instructions))
    assert seconds(await spoken(case, prepared)) > 0
    if case.engine.capabilities.instructions:
        assert prepared.ignored == ()
        assert {options.instructions for options in probe.options} == {instructions}
    else:
        assert prepared.ignored == ("instructions",)
        assert {options.instructions for options in probe.options} == {None}


async def test_a_streaming_engine_gives_a_segment_in_pieces(case):
    piece = await segment(case, TWO_SENTENCES)
    chunks = await collect(case.engine.stream(piece))
    assert seconds(chunks) > 0
    # at the voice's declared rate: the synthesizer resamples nothing it need not
    native = piece.voicing.voice.sample_rate or case.engine.capabilities.sample_rate
    assert {chunk.sample_rate for chunk in chunks} == {native}
    if case.engine.capabilities.streaming:
        assert len([chunk for chunk in chunks if len(chunk.samples)]) > 1


async def test_progress_comes_segment_by_segment(case):
    # What a progress bar, a job and the SSE events read, whatever the engine.
    prepared = case.synthesizer.prepare(
        SpeechRequest(input=TWO_SENTENCES, model=case.engine.name, voice=case.voice)
    )
    reports: list[Progress] = []
    chunks = await collect(case.synthesizer.stream(prepared, reports.append))
    total = len(prepared.segments)
    assert total >= 2 and [report.segments_done for report in reports] == list(range(1, total + 1))
    assert {report.segments_total for report in reports} == {total}
    heard = [report.audio_seconds for report in reports]
    assert heard == sorted(heard) and 0 < heard[0] and heard[-1] <= seconds(chunks) + 1e-6
    assert reports[-1].eta_seconds == 0


# 3. Cancellation stops within 200 ms


async def closed(stream: AsyncIterator[AudioChunk]) -> None:
    """Take the stream's first chunk, then close it; the close is what is timed."""
    assert len((await anext(stream)).samples)
    began = time.perf_counter()
    await stream.aclose()
    took = time.perf_counter() - began
    assert took < CLOSE_WITHIN, f"closing the stream took {took * 1000:.0f} ms"


async def test_closing_an_engine_stream_stops_it_at_once(case, monkeypatch):
    probe = Probe(case.engine, monkeypatch)
    await closed(case.engine.stream(await segment(case, LONG_TEXT)))
    await probe.settled()
    assert (probe.calls, probe.chunks) == (1, 1)  # nothing made past the chunk taken


async def test_closing_a_synthesizer_stream_stops_its_engine(case, monkeypatch):
    prepared = await prepare(case, speech(case, LONG_TEXT))
    probe = Probe(case.engine, monkeypatch)
    await closed(case.synthesizer.stream(prepared))
    await probe.settled()
    calls, chunks = probe.calls, probe.chunks
    await asyncio.sleep(0.1)  # where a producer left running would go on
    assert (probe.calls, probe.chunks) == (calls, chunks)
    assert calls < len(prepared.segments)  # look-ahead went no further; the rest never started
    assert case.synthesizer.stats.active == 0


class SlowToStop(FakeEngine):
    """Stops as Higgs does: closing its generator waits for its generation to end (Higgs:
    ``GenerationJob.cancel`` waits for the model's row to finish its step, up to 30 s)."""

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        try:
            yield from super().synthesize(text, options)
        finally:
            time.sleep(0.3)


async def test_closing_waits_for_no_blocking_engine_to_stop():
    engine = SlowToStop(chunks=4)
    await closed(engine.stream(Segment(0, LONG_TEXT, fake_voicing(engine=engine), 0.0)))


# 4. Words are monotonic and inside the audio


async def test_words_are_in_order_and_inside_the_audio(case):
    chunks = await collect(case.engine.stream(await segment(case, TWO_SENTENCES)))
    # resampled too: 44.1 kHz is no engine's own rate
    streamed = await spoken(case, speech(case, TWO_SENTENCES, sample_rate=44100))
    if not case.engine.capabilities.word_timings:  # none declared, none given
        assert not any(chunk.words for chunk in chunks + streamed)
        return
    words, offset = [], 0.0
    for chunk in chunks:  # the engine's: from the start of the chunk whose audio they start in
        assert all(word.start <= chunk.duration for word in chunk.words), chunk.words
        words += [word.shifted(offset) for word in chunk.words]
        offset += chunk.duration
    check_words(words, offset, TWO_SENTENCES)
    # The synthesizer's: in the stream's time, through the pause between its segments
    streamed_words = [word for chunk in streamed for word in chunk.words]
    check_words(streamed_words, seconds(streamed), TWO_SENTENCES)


# 5. An engine that yields no audio is an error


async def refused_as_no_audio(case: EngineCase, input: str = TEXT, **fields: Any) -> None:
    """The engine, then a request through the synthesizer, makes no audio of ``input`` and
    ``fields``: a NoAudioError, 400 for an engine that does not sample, 500 for one that does."""
    if case.engine.capabilities.sampling:
        expected = (500, "no_audio", None)
    else:
        expected = (400, "unspeakable_input", "input")
    engine_stream = case.engine.stream(await segment(case, input, **fields))
    synthesizer_stream = case.synthesizer.stream(await prepare(case, speech(case, input, **fields)))
    for stream in (engine_stream, synthesizer_stream):
        with pytest.raises(NoAudioError) as caught:
            await collect(stream)
        error = caught.value
        assert (error.status_code, error.code, error.param) == expected


async def test_an_engine_that_yields_no_audio_is_an_error(case, monkeypatch):
    if case.unspoken is not None:  # a real input it makes nothing of
        await refused_as_no_audio(case, **case.unspoken)
    silence(case.engine, monkeypatch)  # and any engine that makes nothing, through the base
    await refused_as_no_audio(case)


# 6. Retries


async def test_a_passing_failure_before_audio_is_tried_again(case, monkeypatch):
    calls = failing(case.engine, monkeypatch, {1, 3}, after_audio=False, retryable=True)
    assert seconds(await collect(case.engine.stream(await segment(case)))) > 0
    assert calls == [0, 0]
    assert seconds(await spoken(case, speech(case))) > 0  # and a request succeeds
    assert calls == [0, 0, 0, 0]


async def test_a_passing_failure_on_every_try_fails_after_the_retries(case, monkeypatch):
    tries = case.engine.settings.retries + 1
    calls = failing(
        case.engine, monkeypatch, range(1, tries + 1), after_audio=False, retryable=True
    )
    with pytest.raises(EngineError, match="dropped"):
        await collect(case.engine.stream(await segment(case)))
    assert calls == [0] * tries


@pytest.mark.parametrize(
    ("after_audio", "retryable"), [(True, True), (False, False)], ids=["after-audio", "not-passing"]
)
async def test_a_failure_after_audio_or_not_passing_fails_the_request(
    case, monkeypatch, after_audio, retryable
):
    calls = failing(case.engine, monkeypatch, {1, 2}, after_audio=after_audio, retryable=retryable)
    with pytest.raises(EngineError, match="dropped"):
        await collect(case.engine.stream(await segment(case)))
    assert calls == [0]
    with pytest.raises(EngineError, match="dropped"):
        await spoken(case, speech(case))
    assert calls == [0, 0]
