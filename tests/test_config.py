"""Configuration layering: defaults < TOML < environment < CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxserve.config import ConfigError, load_settings
from voxserve.engines.runpod import RunpodEngine


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        'port = 9000\nhost = "0.0.0.0"\nsentence_pause = 0.4\n'
        '[voice_aliases]\nnarrator = "joe"\n'
        "[engines.piper]\nthreads = 1\nvolume = 0.8\n"
    )
    return path


def test_defaults_apply_with_nothing_configured(tmp_path: Path):
    settings = load_settings(environ={"HOME": str(tmp_path)})
    assert (settings.host, settings.port, settings.default_voice) == ("127.0.0.1", 8880, "joe")
    assert settings.voice_aliases["alloy"] == "joe"


def test_each_layer_overrides_the_one_before(config_file: Path):
    environ = {"VOXSERVE_PORT": "9100", "VOXSERVE_ENGINES__PIPER__THREADS": "2"}
    settings = load_settings(config_file, overrides={"port": 9200, "host": None}, environ=environ)
    assert settings.port == 9200  # flag beats environment beats file
    assert settings.host == "0.0.0.0"  # a flag left unset does not override
    assert settings.sentence_pause == 0.4
    assert settings.engine_settings("piper") == {"threads": "2", "volume": 0.8}


def test_user_aliases_add_to_the_openai_names(config_file: Path):
    settings = load_settings(config_file, environ={})
    assert settings.voice_aliases["narrator"] == "joe"
    assert settings.voice_aliases["nova"] == "warm_female"


def test_environment_values_can_be_json(tmp_path: Path):
    environ = {"VOXSERVE_VOICE_ALIASES": '{"robot": "joe"}', "HOME": str(tmp_path)}
    assert load_settings(environ=environ).voice_aliases["robot"] == "joe"


def test_the_config_file_can_come_from_the_environment(config_file: Path):
    assert load_settings(environ={"VOXSERVE_CONFIG": str(config_file)}).port == 9000


@pytest.mark.parametrize(
    ("content", "message"),
    [("port = [", "not valid TOML"), ("port = 99999", "port"), ("colour = 1", "colour")],
)
def test_bad_configuration_says_what_is_wrong(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


LIST_VALUES = [
    ("joe", ["joe"]),
    ("joe, warm_female", ["joe", "warm_female"]),
    ('["joe", "warm_female"]', ["joe", "warm_female"]),
]


@pytest.mark.parametrize(("value", "items"), LIST_VALUES)
def test_a_list_setting_given_as_a_string_is_its_items_not_its_letters(
    tmp_path: Path, value: str, items: list[str]
):
    environ = {
        "HOME": str(tmp_path),
        "VOXSERVE_SPEAKERS__PIPER": value,
        "VOXSERVE_AUTH__CORS_ORIGINS": value.replace("joe", "https://a.example"),
    }
    settings = load_settings(environ=environ)
    assert settings.speakers["piper"] == items
    origins = [item.replace("joe", "https://a.example") for item in items]
    assert settings.auth.cors_origins == origins


@pytest.mark.parametrize(("value", "items"), LIST_VALUES)
def test_an_engines_list_setting_from_the_environment_is_its_items(
    tmp_path: Path, value: str, items: list[str]
):
    environ = {
        "HOME": str(tmp_path),
        "VOXSERVE_ENGINES__RUNPOD__ENDPOINT_ID": "abc123",
        "VOXSERVE_ENGINES__RUNPOD__VOICES": value,
        "VOXSERVE_ENGINES__RUNPOD__LANGUAGES": "en",
    }
    engine = RunpodEngine(load_settings(environ=environ).engine_settings("runpod"))
    assert [voice.id for voice in engine.voices()] == items
    assert engine.capabilities.languages == ("en",)
