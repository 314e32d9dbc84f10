"""Kokoro's torch backend on a randomly initialised KModel built here: English through misaki's
G2P on the offline spaCy model, another language through espeak-ng, mixes, errors; and never a
download (spaCy's and the Hub's fetchers are made to fail)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.engines.test_kokoro import voices_file
from voxserve.engines.base import SynthesisOptions
from voxserve.engines.kokoro import KokoroEngine
from voxserve.engines.kokoro_torch import KOKORO_82M, default_config
from voxserve.errors import EngineUnavailableError, InvalidRequestError

RATE = 24000


def tiny_config() -> dict:
    """Kokoro-82M's shape where it must be (512 channels), small elsewhere; few frames a
    phoneme so random durations stay short."""
    config = default_config()
    plbert = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
              "max_position_embeddings": 512, "num_hidden_layers": 1, "dropout": 0.1}  # fmt: skip
    return {**config, "n_layer": 1, "max_dur": 8, "plbert": plbert}


@pytest.fixture(scope="session")
def torch_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    import torch
    from kokoro import KModel

    root = tmp_path_factory.mktemp("kokoro_torch")
    config = tiny_config()
    config_path = root / "config.json"
    config_path.write_text(json.dumps(config))
    torch.manual_seed(0)
    blank = root / "blank.pth"
    torch.save({}, blank)
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(blank))
    weights = root / "kokoro.pth"
    torch.save({name: getattr(model, name).state_dict()
                for name in ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")},
               weights)  # fmt: skip
    voices = voices_file(root / "voices.npz", ["af_heart", "am_adam", "ff_siwis"])
    return weights, config_path, voices


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    import huggingface_hub
    import kokoro.model
    import spacy.cli

    def refuse(*args, **kwargs):
        raise AssertionError("no download at test time")

    monkeypatch.setattr(spacy.cli, "download", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(kokoro.model, "hf_hub_download", refuse)


@pytest.fixture(scope="session")
def torch_engine(torch_files) -> KokoroEngine:
    weights, config_path, voices = torch_files
    engine = KokoroEngine({"backend": "torch", "device": "cpu", "torch_model_path": weights,
                           "torch_config_path": config_path, "voices_path": voices})  # fmt: skip
    engine.load()
    return engine


def chunks(engine: KokoroEngine, text: str, voice: str) -> list:
    return list(engine.synthesize(text, SynthesisOptions(voice)))


def test_english_is_spoken_sentence_by_sentence_with_words_inside_each_chunk(torch_engine):
    said = chunks(torch_engine, "Hello there, my friend. How are you today?", "af_heart")
    assert len(said) == 2
    words = [[word.text for word in chunk.words] for chunk in said]
    assert words == [["Hello", "there,", "my", "friend."], ["How", "are", "you", "today?"]]
    for chunk in said:
        assert chunk.sample_rate == RATE and chunk.samples.dtype == np.float32
        assert np.isfinite(chunk.samples).all() and np.abs(chunk.samples).max() > 0
        starts = [word.start for word in chunk.words]
        assert starts == sorted(starts)
        assert all(0 <= w.start < w.end <= len(chunk.samples) / RATE for w in chunk.words)


def test_a_french_voice_speaks_espeak_phonemes_timed_by_durations(torch_engine):
    said = chunks(torch_engine, "Bonjour mes amis.", "ff_siwis")
    assert len(said) == 1
    assert [word.text for word in said[0].words] == ["Bonjour", "mes", "amis."]
    assert all(0 <= w.start < w.end <= len(said[0].samples) / RATE for w in said[0].words)


def test_a_mix_speaks_between_its_voices(torch_engine):
    said = chunks(torch_engine, "Good morning.", "af_heart(2)+am_adam(1)")
    assert said and np.abs(said[0].samples).max() > 0


def test_an_unknown_voice_is_the_requests_error(torch_engine):
    with pytest.raises(InvalidRequestError) as error:
        chunks(torch_engine, "Hi.", "zz_nobody")
    assert error.value.param == "voice"


def test_the_backend_setting_is_validated():
    with pytest.raises(EngineUnavailableError, match=r"engines\.kokoro\.backend"):
        KokoroEngine({"backend": "tensorflow"})


def test_the_default_config_is_kokoro_82m_with_its_vocab():
    config = default_config()
    assert config["hidden_dim"] == KOKORO_82M["hidden_dim"] == 512
    assert len(config["vocab"]) > 100 and config["n_token"] == 178
