"""The Sesame CSM-1B engine, on a tiny random checkpoint of the real architecture (CPU, offline).

The tiny model never ends its stream by itself, so every call runs to the engine's frame cap:
2 s (25 frames of 80 ms) a segment in these tests, in chunks of 2, then 4 frames.

The generation modules are imported in the tests that use them, once the engine is loaded: asked
for anything before torchaudio's stand-in is in place, transformers would refuse Higgs' codec for
the rest of the session (``higgs.torchaudio_compat``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tests.engines.conftest import load_csm
from voxserve.audio.decode import decode_audio
from voxserve.config import Settings, load_settings
from voxserve.engines.base import Segment, SynthesisOptions, Voicing
from voxserve.engines.csm import CsmEngine
from voxserve.engines.csm.prompts import Turn, speaker_for, voice_key
from voxserve.engines.csm.settings import CsmSettings
from voxserve.engines.higgs.loading import decode_frames
from voxserve.engines.higgs.streaming import WindowedDecoder
from voxserve.engines.registry import EngineRegistry
from voxserve.errors import EngineUnavailableError, InvalidRequestError
from voxserve.request import DialogueRequest, Sampling, SpeechRequest
from voxserve.server.ws_tts import speaker_voice
from voxserve.synthesis.dialogue import prepare_dialogue, render_dialogue
from voxserve.synthesis.synthesizer import Synthesizer

RATE = 24000
FRAME = 1920
"""Samples in one Mimi frame (80 ms)."""
FRAMES = 25
"""What one call makes: the tests' cap of 2 s."""


def speak(engine: CsmEngine, text: str, voice: str = "csm_0", **options) -> list:
    return list(engine.synthesize(text, SynthesisOptions(voice, **options)))


def readable(engine: CsmEngine, input_ids: torch.Tensor) -> str:
    """Token ids as text, each run of audio tokens shown as one <audio>."""
    processor = engine._loaded().processor
    text = processor.tokenizer.decode(input_ids)
    while processor.audio_token * 2 in text:
        text = text.replace(processor.audio_token * 2, processor.audio_token)
    return text.replace(processor.audio_token, "<audio>")


def prompt_text(engine: CsmEngine, text: str, voice: str = "csm_0", history=(), **options) -> str:
    prompt, _ = engine.prompt(text, SynthesisOptions(voice, **options), history)
    return readable(engine, prompt.input_ids)


class StepTap:
    """Watches the model (a forward pre-hook, observing only): the embeddings each prefill got,
    and the frame each decoding step was fed (the frame sampled the step before)."""

    def __init__(self, engine: CsmEngine):
        self.prefills: list[torch.Tensor] = []
        self.fed: list[torch.Tensor] = []
        model = engine._loaded().model
        self._handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs) -> None:
        if kwargs.get("inputs_embeds") is not None:
            self.prefills.append(kwargs["inputs_embeds"][0].clone())
        else:
            self.fed.append(kwargs["input_ids"][0, -1].clone())

    def remove(self) -> None:
        self._handle.remove()


def snr(reference: np.ndarray, audio: np.ndarray) -> float:
    """How far ``audio`` is from ``reference``, in dB: signal over difference."""
    return 10 * np.log10(np.sum(reference**2) / max(np.sum((audio - reference) ** 2), 1e-30))


def csm_synthesizer(engine: CsmEngine, data_dir: Path, **settings) -> Synthesizer:
    settings = Settings(data_dir=data_dir, default_engine="csm", default_voice="csm_0", **settings)
    registry = EngineRegistry(settings)
    registry.register(engine)
    return Synthesizer(settings, registry)


# Settings and capabilities


def test_settings_come_from_the_table_and_voxserve_variables_over_defaults(tmp_path: Path):
    environ = {
        "HOME": str(tmp_path),
        "VOXSERVE_ENGINES__CSM__MODEL_PATH": "/models/csm",
        "VOXSERVE_ENGINES__CSM__TOP_K": "20",
        "VOXSERVE_ENGINES__CSM__CONTEXT_SECONDS": "12.5",
    }
    settings = EngineRegistry(load_settings(environ=environ)).get("csm").settings
    assert isinstance(settings, CsmSettings)
    assert settings.model_path == "/models/csm" and settings.top_k == 20
    assert settings.context_seconds == 12.5
    assert (settings.temperature, settings.context_turns, settings.device) == (0.9, 6, "auto")


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"device": "gpu"}, "engines.csm.device: .*device must be auto, cpu, cuda or cuda:N"),
        ({"temperature": 0}, "engines.csm.temperature: .*greater than 0"),
        ({"context_turns": -1}, "engines.csm.context_turns: "),
        ({"model_path": ""}, "engines.csm.model_path: "),
        ({"modle_path": "/models"}, "engines.csm.modle_path: Extra inputs"),
    ],
)
def test_invalid_settings_are_refused_when_the_configuration_loads(table, problem, tmp_path):
    with pytest.raises(ValidationError, match=problem):
        Settings(data_dir=tmp_path, engines={"csm": table})


def test_missing_weights_say_which_setting_points_at_them(tmp_path: Path):
    with pytest.raises(EngineUnavailableError, match="Sesame CSM model not found") as raised:
        CsmEngine({"model_path": str(tmp_path / "absent.bin"), "device": "cpu"}).load()
    assert "VOXSERVE_ENGINES__CSM__MODEL_PATH" in raised.value.message
    uncached = CsmEngine({"model_path": "nobody/no-such-csm", "device": "cpu"})
    with pytest.raises(InvalidRequestError, match=r"\[engines.csm\] model_path") as refused:
        uncached.load()  # a Hub id, not in the cache, downloads off: nothing is fetched
    assert refused.value.code == "engine_not_configured"


def test_capabilities_and_voices_need_no_model():
    engine = CsmEngine({"device": "cpu"})
    capabilities = engine.capabilities
    assert (capabilities.sample_rate, capabilities.languages) == (RATE, ("en-US",))
    assert capabilities.streaming and capabilities.cloning and capabilities.carries_context
    assert capabilities.sampling and not capabilities.instructions
    assert capabilities.speed_range == (1.0, 1.0) and capabilities.concurrency == 1
    assert [voice.id for voice in engine.voices()] == ["csm_0", "csm_1"]
    assert CsmEngine({"device": "cuda", "max_batch": 3}).capabilities.concurrency == 3


# Speakers


def test_speaker_roles_map_to_the_two_speakers(csm_engine, tmp_path):
    synthesizer = csm_synthesizer(csm_engine, tmp_path)
    voices = [speaker_voice(synthesizer, csm_engine, role) for role in range(4)]
    assert voices == ["csm_0", "csm_1", "csm_0", "csm_1"]
    for role, voice in enumerate(voices):
        assert prompt_text(csm_engine, "Hello there.", voice) == (
            f"<|begin_of_text|>[{role % 2}]Hello there.<|end_of_text|>"
        )


def test_a_cloned_voice_takes_a_speaker_no_other_voice_has():
    codes = torch.zeros((3, 8), dtype=torch.long)
    first = Turn(0, "Hi.", codes, voice_key("csm_0", None))
    clone = voice_key("ann", "/clips/ann.wav")
    assert speaker_for("ann", clone, ()) == 0  # alone: the first speaker
    assert speaker_for("ann", clone, (first,)) == 1
    assert speaker_for("ann", clone, (first, Turn(3, "Yes.", codes, clone))) == 3  # its own
    assert speaker_for("csm_1", voice_key("csm_1", None), (first,)) == 1


def test_cloning_puts_the_clip_first_as_a_turn_of_the_speaker(csm_engine, reference_wav):
    options = {"reference_audio": str(reference_wav), "reference_text": "The reference words."}
    assert prompt_text(csm_engine, "New words.", "ann", **options) == (
        "<|begin_of_text|>[0]The reference words.<|end_of_text|><audio><|audio_eos|>"
        "<|begin_of_text|>[0]New words.<|end_of_text|>"
    )
    prompt, _ = csm_engine.prompt("New words.", SynthesisOptions("ann", **options))
    codec = csm_engine._loaded().codec
    samples = torch.from_numpy(decode_audio(reference_wav, RATE).samples)
    with torch.inference_mode():
        codes = codec.encode(samples[None, None]).audio_codes[0].T
    assert codes.shape == (25, 8)  # 2 s at 12.5 frames a second
    assert torch.equal(prompt.audio, codes)
    assert int((prompt.input_ids == csm_engine._loaded().processor.audio_token_id).sum()) == 25
    assert speak(csm_engine, "New words.", "ann", **options)


def test_a_missing_or_overlong_reference_is_refused(csm_checkpoint, reference_wav, tmp_path):
    engine = load_csm(csm_checkpoint, max_reference_seconds=1)
    try:
        with pytest.raises(InvalidRequestError, match="at most 1 s") as refused:
            engine.prompt("Hi.", SynthesisOptions("ann", reference_audio=str(reference_wav)))
        assert refused.value.param == "voice"
        with pytest.raises(InvalidRequestError, match="cannot be read"):
            engine.prompt("Hi.", SynthesisOptions("ann", reference_audio=str(tmp_path / "x")))
    finally:
        engine.unload()


# Context


def test_the_next_turn_hears_the_last_ones_text_and_codes(csm_engine):
    options = SynthesisOptions("csm_0", context_id="text-1")
    tap = StepTap(csm_engine)
    try:
        assert speak(csm_engine, "The first turn.", context_id="text-1")
        first_fed, tap.fed = tap.fed, []
        state = csm_engine.memory.recall("text-1", csm_engine.name)
        prompt, _ = csm_engine.prompt("The second turn.", options, tuple(state.history))
        speak(csm_engine, "The second turn.", context_id="text-1")
    finally:
        tap.remove()
    assert readable(csm_engine, prompt.input_ids) == (
        "<|begin_of_text|>[0]The first turn.<|end_of_text|><audio><|audio_eos|>"
        "<|begin_of_text|>[0]The second turn.<|end_of_text|>"
    )
    # The codes the model sampled (each fed back at the next step; the last one is not), as is.
    assert len(prompt.audio) == FRAMES
    assert torch.equal(prompt.audio[:-1], torch.stack(first_fed))
    # and the second generation started from them: its prefill embedded those codes.
    model = csm_engine._loaded().model
    audio = prompt.input_ids == model.config.audio_token_id
    from voxserve.engines.csm.generation import embed

    with torch.inference_mode():
        expected = embed(model, prompt)
    assert torch.equal(tap.prefills[1][audio], expected[audio])
    assert torch.equal(tap.prefills[1], expected)


def test_the_context_is_bounded_in_turns_and_seconds(csm_checkpoint):
    engine = load_csm(csm_checkpoint, context_turns=2, context_seconds=3)
    try:
        for text in ("One.", "Two.", "Three."):
            speak(engine, text, context_id="long")
        history = tuple(engine.memory.recall("long", engine.name).history)
        assert [turn.text for turn in history] == ["Two.", "Three."]  # context_turns
        text = prompt_text(engine, "Four.", history=history)
        assert "Three." in text and "Two." not in text  # 2 s each: 3 s holds one
    finally:
        engine.unload()


async def test_a_dialogue_is_one_conversation_of_both_speakers(csm_engine, tmp_path, monkeypatch):
    prompts: list[str] = []
    prompt = csm_engine.prompt

    def recorded(text, options, history=()):
        made = prompt(text, options, history)
        prompts.append(readable(csm_engine, made[0].input_ids))
        return made

    monkeypatch.setattr(csm_engine, "prompt", recorded)  # observing: the engine's own prompts
    synthesizer = csm_synthesizer(csm_engine, tmp_path, first_fragment_small=False)
    request = DialogueRequest(
        model="csm",
        voices={"Ann": "csm_0", "Ben": "csm_1"},
        turns=[{"speaker": "Ann", "text": "Hello there."}, {"speaker": "Ben", "text": "Hi Ann."},
               {"speaker": "Ann", "text": "Bye now."}],
    )  # fmt: skip
    dialogue = prepare_dialogue(synthesizer, request)
    assert [voicing.voice.id for _, voicing in dialogue.turns] == ["csm_0", "csm_1", "csm_0"]
    items = [item async for item in render_dialogue(synthesizer, dialogue)]
    assert items
    turn = "<|begin_of_text|>[{}]{}<|end_of_text|>"
    spoken = "<audio><|audio_eos|>"
    assert prompts == [
        turn.format(0, "Hello there."),
        turn.format(0, "Hello there.") + spoken + turn.format(1, "Hi Ann."),
        turn.format(0, "Hello there.") + spoken + turn.format(1, "Hi Ann.") + spoken
        + turn.format(0, "Bye now."),
    ]  # fmt: skip


# Streaming


def test_windowed_decoding_matches_decoding_all_at_once(csm_engine):
    codec = csm_engine._loaded().codec

    def decode(frames: torch.Tensor) -> np.ndarray:  # not clipped, unlike the engine's
        with torch.inference_mode():
            return codec.decode(frames[None]).audio_values[0, 0].numpy()

    codes = torch.randint(0, 64, (8, 60))
    whole = decode(codes)

    def windowed(context: int) -> np.ndarray:
        decoder = WindowedDecoder(
            decode,
            FRAME,
            window=12,
            first_window=4,
            context=context,
            crossfade=0,
            lookahead=0,  # Mimi's decoder is causal: no frame's samples wait for later ones
        )
        pieces = [decoder.push(frame) for frame in codes.T]
        pieces.append(decoder.finish())
        return np.concatenate([piece for piece in pieces if piece is not None])

    default = csm_engine.settings.decode_context_frames
    peak = np.abs(whole).max()
    assert len(windowed(default)) == len(whole) == 60 * FRAME
    assert np.abs(windowed(default) - whole).max() < 1e-4 * peak
    assert snr(whole, windowed(default)) > 80
    # Without left context every join is off: what the context is there for.
    assert np.abs(windowed(0) - whole).max() > 1e-2 * peak and snr(whole, windowed(0)) < 40


def test_speech_streams_frame_windows_that_match_a_one_shot_decode(csm_engine):
    chunks = speak(csm_engine, "One, two.", context_id="streamed")
    assert [len(chunk.samples) for chunk in chunks[:3]] == [2 * FRAME, 4 * FRAME, 4 * FRAME]
    assert all(chunk.sample_rate == RATE and chunk.samples.dtype == np.float32 for chunk in chunks)
    streamed = np.concatenate([chunk.samples for chunk in chunks])
    codes = csm_engine.memory.recall("streamed", csm_engine.name).history[-1].codes
    whole = decode_frames(csm_engine._loaded().codec, codes.T)
    assert len(streamed) == len(whole) == FRAMES * FRAME  # 2 s: the cap
    assert np.abs(streamed - whole).max() < 1e-3 and snr(whole, streamed) > 60


def test_an_end_frame_ends_its_request(csm_engine):
    from voxserve.engines.csm.generation import _FrameTap
    from voxserve.engines.higgs.generation import GenerationJob

    model = csm_engine._loaded().model
    job = GenerationJob(None, max_new_tokens=10)
    tap = _FrameTap(model, [job])
    tap.put(torch.zeros((1, 5), dtype=torch.long))  # the prompt: not a frame
    spoken = torch.arange(1, 9)[None]
    tap.put(spoken)
    tap.put(torch.zeros((1, 8), dtype=torch.long))  # CSM's end: all end codes
    assert job.finished.is_set()
    assert [frame.tolist() for frame in job.columns()] == [spoken[0].tolist()]


def test_sampling_comes_with_each_request(csm_engine):
    def audio(seed: int, frames: int = 6) -> np.ndarray:
        sampling = Sampling(temperature=1.5, seed=seed, max_new_tokens=frames)
        return np.concatenate(
            [chunk.samples for chunk in speak(csm_engine, "Hi.", sampling=sampling)]
        )

    first, other, again = audio(1), audio(2), audio(1)
    np.testing.assert_array_equal(first, again)  # the request's seed, not the engine's 3
    assert not np.array_equal(first, other)
    assert len(first) == 6 * FRAME  # its max_new_tokens, in frames, under the cap


def test_languages_other_than_english_are_refused_naming_the_field(csm_engine, tmp_path):
    with pytest.raises(InvalidRequestError, match="English") as refused:
        speak(csm_engine, "Bonjour.", language="fr")
    assert (refused.value.param, refused.value.code) == ("language", "unsupported_language")
    synthesizer = csm_synthesizer(csm_engine, tmp_path)
    with pytest.raises(InvalidRequestError) as refused:
        synthesizer.prepare(SpeechRequest(input="Hallo.", model="csm", language="de"))
    assert refused.value.param == "language"
    assert speak(csm_engine, "Hello.", language="en")


# Cancellation and batching


def wait_idle(engine: CsmEngine) -> bool:
    """Whether the engine's generation worker goes idle (within a generous 10 s)."""
    worker = engine._loaded().worker
    deadline = time.monotonic() + 10
    while not worker.idle and time.monotonic() < deadline:
        time.sleep(0.01)
    return worker.idle


async def test_closing_a_segments_stream_stops_its_generation(csm_checkpoint):
    engine = load_csm(csm_checkpoint, max_audio_seconds=30)
    tap = StepTap(engine)
    try:
        voicing = Voicing(engine, engine.voices()[0], RATE, SynthesisOptions("csm_0"))
        stream = engine.stream(Segment(0, "A long text " * 20, voicing, 0.0))
        await anext(stream)
        steps_at_close = len(tap.fed)
        await stream.aclose()  # returns at once; the row ends within a step, and generate with it
        assert await asyncio.to_thread(wait_idle, engine)
        assert len(tap.fed) - steps_at_close <= 2
        assert steps_at_close < 50  # far from the cap of 375 frames
    finally:
        tap.remove()
        engine.unload()


def test_requests_arriving_together_share_one_batch(csm_checkpoint):
    engine = load_csm(csm_checkpoint, max_batch=2, batch_wait_ms=500)
    results: dict[str, list] = {}

    def run(text: str) -> None:
        results[text] = speak(engine, text)

    try:
        threads = [threading.Thread(target=run, args=(text,)) for text in ("One.", "Two words.")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert engine.capabilities.concurrency == engine._loaded().worker.max_batch == 2
        assert (engine.worker_stats.batches, engine.worker_stats.largest_batch) == (1, 2)
        # Both rows ran to the cap: each request got its own 2 s.
        assert {text: sum(len(c.samples) for c in chunks) for text, chunks in results.items()} == {
            "One.": FRAMES * FRAME,
            "Two words.": FRAMES * FRAME,
        }
    finally:
        engine.unload()
