"""Kokoro on its real packaged model: intelligible English from a Japanese voice, mixes, the
languages of voices, words, and a packaged model that is never loaded partial or corrupt."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import running
from tests.engines.test_runpod import heard
from voxserve.audio.voice_transform import median_pitch
from voxserve.config import Settings
from voxserve.engines.base import SynthesisOptions
from voxserve.engines.kokoro import MAX_PHONEMES, KokoroEngine, phoneme_batches, phonemizer_language
from voxserve.engines.kokoro_model import (
    PACKAGED_NAME,
    PACKAGED_SHA256,
    CorruptModelError,
    packaged_kokoro_model,
    packaged_model,
    read_model,
)
from voxserve.engines.kokoro_voices import LANGUAGES, parse_mix
from voxserve.engines.registry import EngineRegistry
from voxserve.errors import EngineUnavailableError, InvalidRequestError
from voxserve.request import SpeechOptions
from voxserve.server.app import create_app
from voxserve.synthesis.synthesizer import Synthesizer
from voxserve.voices.resolution import VoiceResolver

RATE = 24000


def spoken(engine: KokoroEngine, text: str, voice: str = "jm_kumo", **options) -> np.ndarray:
    return np.concatenate(
        [chunk.samples for chunk in engine.synthesize(text, SynthesisOptions(voice, **options))]
    )


def voices_file(path: Path, ids: list[str]) -> Path:
    """A voices file of ``ids`` (random styles: nothing here is spoken)."""
    style = np.random.default_rng(0).standard_normal((510, 1, 256)).astype(np.float32)
    np.savez(path, **{voice: style for voice in ids})
    return path


def resolver(engine: KokoroEngine, tmp_path: Path) -> VoiceResolver:
    settings = Settings(data_dir=tmp_path, default_engine="kokoro", default_voice="jm_kumo")
    registry = EngineRegistry(settings)
    registry.register(engine)
    return VoiceResolver(settings, registry)


def test_english_text_in_jm_kumo_is_intelligible(kokoro_engine, piper_synthesizer):
    text = "The quick brown fox jumps over the lazy dog, and then takes an umbrella to work."
    words = heard(piper_synthesizer.resolver.transcriber, spoken(kokoro_engine, text), RATE)
    for word in ("fox", "lazy", "dog", "umbrella", "work"):
        assert word in words, words


def test_a_mix_sounds_between_its_parts(kokoro_engine):
    text = "The birds sing at dawn."
    pitches = {
        voice: median_pitch(spoken(kokoro_engine, text, voice), RATE)
        for voice in ("jm_kumo", "jf_alpha", "jm_kumo(1)+jf_alpha(1)")
    }
    low, high = sorted((pitches["jm_kumo"], pitches["jf_alpha"]))
    assert high > low * 1.3, pitches  # a man and a woman
    assert low < pitches["jm_kumo(1)+jf_alpha(1)"] < high, pitches


def test_mixes_are_voices_named_canonically_and_weighted_by_share(kokoro_engine):
    voice = kokoro_engine.find_voice(" jm_kumo (2) + jf_alpha ")
    assert voice is not None
    assert (voice.id, voice.language) == ("jm_kumo(2)+jf_alpha(1)", "ja")
    assert kokoro_engine.find_voice(voice.id) == voice
    assert parse_mix(voice.id).parts == (("jm_kumo", 2 / 3), ("jf_alpha", 1 / 3))
    assert kokoro_engine.find_voice("jm_kumo(3)") == kokoro_engine.find_voice("jm_kumo")
    # weighted: a mix leaning to the man is lower than one leaning to the woman
    text = "The birds sing at dawn."
    manly = median_pitch(spoken(kokoro_engine, text, "jm_kumo(3)+jf_alpha(1)"), RATE)
    womanly = median_pitch(spoken(kokoro_engine, text, "jm_kumo(1)+jf_alpha(3)"), RATE)
    assert manly < womanly


@pytest.mark.parametrize("spec", ["jm_kumo+nobody", "jm_kumo(0)+jf_alpha", "jm_kumo()", "+"])
def test_a_mix_of_unknown_parts_or_bad_weights_is_no_voice(kokoro_engine, tmp_path, spec):
    assert kokoro_engine.find_voice(spec) is None
    with pytest.raises(InvalidRequestError) as refused:
        resolver(kokoro_engine, tmp_path).voicing(SpeechOptions(model="kokoro", voice=spec))
    assert (refused.value.param, refused.value.code) == ("voice", "voice_not_found")


def test_voices_speak_the_language_of_their_prefix_and_english(tmp_path):
    ids = [f"{prefix}f_test" for prefix in LANGUAGES]
    engine = KokoroEngine({"voices_path": str(voices_file(tmp_path / "voices.npz", ids))})
    languages = {voice.id: voice.language for voice in engine.voices()}
    assert languages == {f"{prefix}f_test": language for prefix, language in LANGUAGES.items()}
    for voice in engine.voices():
        assert set(voice.speaks()) == {voice.language, "en-US", "en-GB"}
    assert set(engine.capabilities.languages) == set(LANGUAGES.values())


def test_a_mix_across_languages_is_refused_naming_voice(tmp_path):
    path = voices_file(tmp_path / "voices.npz", ["af_one", "af_two", "ff_three"])
    engine = KokoroEngine({"voices_path": str(path)})
    assert engine.find_voice("af_one+af_two(2)").language == "en-US"
    with pytest.raises(InvalidRequestError) as refused:
        engine.find_voice("af_one+ff_three")
    assert (refused.value.param, refused.value.code) == ("voice", "invalid_voice_mix")


def test_the_phonemizer_follows_the_request_then_the_voice_then_the_script():
    assert phonemizer_language("The birds sing.", "fr-FR", "ja") == "fr-fr"
    assert phonemizer_language("The birds sing.", None, "ja") == "en-us"  # no kana nor kanji
    assert phonemizer_language("こんにちは。", None, "ja") == "ja"
    assert phonemizer_language("Los pájaros cantan.", None, "es") == "es"
    assert phonemizer_language("The birds sing.", None, "en-GB") == "en-gb"
    assert phonemizer_language("The birds sing.", None, "pt-BR") == "pt-br"


async def test_a_language_the_request_names_is_spoken_in(kokoro_engine, tmp_path):
    options = SpeechOptions(model="kokoro", voice="jm_kumo", language="en-GB")
    voicing = await resolver(kokoro_engine, tmp_path).resolve(options)
    assert voicing.options.language == "en-GB"
    british = await asyncio.to_thread(spoken, kokoro_engine, "Tomato.", language="en-GB")
    american = await asyncio.to_thread(spoken, kokoro_engine, "Tomato.", language="en-US")
    assert not np.array_equal(british, american)


def test_each_sentence_is_a_chunk_with_its_own_words(kokoro_engine):
    text = "The birds sing at dawn. The river, which is wide, runs to the sea!"
    chunks = list(kokoro_engine.synthesize(text, SynthesisOptions("jm_kumo")))
    assert [[word.text for word in chunk.words] for chunk in chunks] == [
        ["The", "birds", "sing", "at", "dawn."],
        ["The", "river,", "which", "is", "wide,", "runs", "to", "the", "sea!"],
    ]
    for chunk in chunks:
        ends = [0.0] + [word.end for word in chunk.words]
        assert all(a <= word.start < word.end for a, word in zip(ends, chunk.words, strict=False))
        assert chunk.words[-1].end <= chunk.duration


def test_a_batch_is_a_sentence_within_kokoros_context():
    assert phoneme_batches(" ðə  bˈɜːdz. sˈɪŋ!  æt dˈɔːn ") == ["ðə bˈɜːdz.", "sˈɪŋ!", "æt dˈɔːn"]
    long = " ".join(["wˈɜːdz"] * 200) + "."
    batches = phoneme_batches(long)
    assert len(batches) == 3 and all(len(batch) <= MAX_PHONEMES for batch in batches)
    assert " ".join(batches) == long


def test_text_without_phonemes_gives_no_audio(kokoro_engine):
    assert list(kokoro_engine.synthesize("\u0660", SynthesisOptions("jm_kumo"))) == []


def test_the_packaged_model_is_joined_once_and_checked(tmp_path, kokoro_engine):
    joined = kokoro_engine.data_dir / "models" / "kokoro" / PACKAGED_NAME
    model = read_model(joined, packaged=True)
    assert model.durations and model.data.startswith(joined.read_bytes())
    assert [path.name for path in joined.parent.iterdir()] == [PACKAGED_NAME]  # no leftovers

    # a partial file (an interrupted copy) is joined again, never loaded
    directory = tmp_path / "partial"
    directory.mkdir()
    (directory / PACKAGED_NAME).write_bytes(joined.read_bytes()[:1000])
    rejoined = packaged_model(directory)
    assert rejoined.stat().st_size == joined.stat().st_size
    assert read_model(rejoined, packaged=True).durations

    # a corrupt one of the right size is refused when read, and joined again
    corrupt = tmp_path / "corrupt" / PACKAGED_NAME
    corrupt.parent.mkdir()
    shutil.copyfile(joined, corrupt)
    with corrupt.open("r+b") as file:
        file.seek(5_000_000)
        file.write(b"\0" * 16)
    assert packaged_model(corrupt.parent) == corrupt  # the right size: taken for joined
    with pytest.raises(CorruptModelError, match=PACKAGED_SHA256):
        read_model(corrupt, packaged=True)
    assert packaged_kokoro_model(corrupt.parent).data == model.data
    assert [path.name for path in corrupt.parent.iterdir()] == [PACKAGED_NAME]


def test_a_missing_model_or_voices_file_is_a_clear_error(tmp_path):
    engine = KokoroEngine({"model_path": str(tmp_path / "nowhere.onnx")}, data_dir=tmp_path)
    with pytest.raises(EngineUnavailableError, match="model_path"):
        engine.load()
    engine = KokoroEngine({"voices_path": str(tmp_path / "nowhere.npz")}, data_dir=tmp_path)
    assert engine.voices() == []
    with pytest.raises(EngineUnavailableError, match="voices_path"):
        engine.load()


def test_the_speaker_roles_are_four_voices_of_the_packaged_ones(kokoro_engine):
    roles = Settings().speakers["kokoro"]
    assert len(set(roles)) == 4
    found = [kokoro_engine.find_voice(role) for role in roles]
    assert all(voice is not None and voice.language == "ja" for voice in found), found


def test_a_voices_file_is_fetched_checked_and_kept_only_when_downloads_are_allowed(
    file_server, tmp_path
):
    state, url = file_server
    data = voices_file(tmp_path / "served.npz", ["jm_kumo", "jf_alpha"]).read_bytes()
    state.files["/voices-v1.0.bin"] = data
    settings = {"voices_url": f"{url}/voices-v1.0.bin",
                "voices_sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    offline = KokoroEngine(settings, data_dir=tmp_path / "offline")
    assert offline.voices() == []  # nothing fetched, nothing listed
    with pytest.raises(EngineUnavailableError) as caught:
        offline.load()
    assert caught.value.code == "engine_not_configured"
    assert "allow_downloads" in caught.value.message and not state.requests
    allowed = KokoroEngine({**settings, "allow_downloads": True}, data_dir=tmp_path / "allowed")
    allowed.load()
    assert sorted(voice.id for voice in allowed.voices()) == ["jf_alpha", "jm_kumo"]
    assert len(state.requests) == 1
    again = KokoroEngine({**settings, "allow_downloads": True}, data_dir=tmp_path / "allowed")
    assert sorted(voice.id for voice in again.voices()) == ["jf_alpha", "jm_kumo"]  # kept
    with pytest.raises(EngineUnavailableError, match="voices_url needs voices_sha256"):
        KokoroEngine({"voices_url": f"{url}/voices-v1.0.bin"})


def test_a_mix_is_combined_into_a_profile_and_speaks_as_one(kokoro_engine, tmp_path):
    # Kokoro-FastAPI's voice combining: the mix saved under a name, usable as any voice
    synthesizer = Synthesizer(Settings(data_dir=tmp_path, preload=False))
    synthesizer.registry.register(kokoro_engine)
    with running(create_app(synthesizer=synthesizer)) as url:
        combined = httpx.post(f"{url}/v1/audio/voices/combine", timeout=30, json={
            "voices": ["jm_kumo(2)", "jf_alpha"], "name": "Duo", "model": "kokoro"})  # fmt: skip
        assert combined.status_code == 201, combined.text
        assert (combined.json()["id"], combined.json()["voice"]) == ("duo", "jm_kumo(2)+jf_alpha")
        speech = httpx.post(f"{url}/v1/audio/speech", timeout=60, json={
            "input": "Hello there.", "voice": "duo", "response_format": "pcm"})  # fmt: skip
        assert speech.status_code == 200 and speech.headers["x-engine"] == "kokoro"
        assert speech.headers["x-voice"] == "jm_kumo(2)+jf_alpha(1)"  # its canonical id
        listed = httpx.get(f"{url}/v1/audio/voices", timeout=30).json()["voices"]
        kumo = next(voice for voice in listed if voice["id"] == "jm_kumo")
        assert (kumo["language"], kumo["languages"]) == ("ja", ["ja", "en-US", "en-GB"])
        assert len(speech.content) > 0.3 * 24000 * 2
        unknown = httpx.post(f"{url}/v1/audio/voices/combine", timeout=30, json={
            "voices": "jm_kumo+nobody", "name": "bad", "model": "kokoro"})  # fmt: skip
        assert (unknown.status_code, unknown.json()["error"]["param"]) == (400, "voice")
        empty = httpx.post(f"{url}/v1/audio/voices/combine", json={"voices": [], "name": "x"})
        assert (empty.status_code, empty.json()["error"]["param"]) == (400, "voices")
