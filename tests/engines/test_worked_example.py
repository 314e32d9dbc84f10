"""docs/engines.md's worked example is a working engine: one module, a settings model and a line
in the registry, configured and served like the others."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from voxserve.config import ConfigError, load_settings
from voxserve.engines import registry
from voxserve.request import SpeechRequest
from voxserve.synthesis.synthesizer import Synthesizer

GUIDE = Path(__file__).parents[2] / "docs" / "engines.md"


@pytest.fixture
def tone_engine(tmp_path, monkeypatch):
    """The guide's module written out and registered under its name, as the guide says."""
    module = re.search(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S).group(1)
    (tmp_path / "tone_example.py").write_text(module, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.ENGINE_CLASSES, "tone", "tone_example:ToneEngine")
    yield
    sys.modules.pop("tone_example", None)


async def test_the_guides_engine_is_configured_and_speaks_with_timed_words(tone_engine, tmp_path):
    settings = load_settings(
        environ={"VOXSERVE_ENGINES__TONE__PITCH": "180", "VOXSERVE_DATA_DIR": str(tmp_path)}
    )
    synthesizer = Synthesizer(settings)
    request = SpeechRequest(input="Hello there, friend.", model="tone", voice="high", speed=2.0)
    chunks = [chunk async for chunk in synthesizer.stream(request)]
    engine = synthesizer.registry.get("tone")
    assert engine.settings.pitch == 180.0
    words = [word.text for chunk in chunks for word in chunk.words]
    assert words == ["Hello", "there,", "friend."]
    assert sum(len(chunk.samples) for chunk in chunks) >= 3 * 0.15 * 16000  # 0.3 s a word at 2x


def test_a_misspelt_key_of_the_guides_engine_stops_the_configuration(tone_engine):
    with pytest.raises(ConfigError, match="engines.tone.pich"):
        load_settings(environ={"VOXSERVE_ENGINES__TONE__PICH": "180"})
