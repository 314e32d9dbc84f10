"""Wyoming's voices: named ``engine/voice``, in their languages; speakers on engines with a cast."""

from __future__ import annotations

from dataclasses import replace

from tests.fakes import FakeEngine, make_synthesizer
from voxserve.engines.base import Capabilities
from voxserve.server.wyoming.info import server_info
from voxserve.server.wyoming.voices import voice_fields


class CastEngine(FakeEngine):
    """The fake, speaking a cast (``multi_speaker``): its voices are its speakers."""

    name = "cast"

    def describe(self) -> Capabilities:
        return replace(super().describe(), multi_speaker=True)


def test_an_engine_with_a_cast_lists_its_voices_as_speakers_and_a_speaker_picks_one():
    synthesizer = make_synthesizer(FakeEngine(), wyoming={"engines": ["fake", "cast"]})
    synthesizer.registry.register(CastEngine())

    voices = {voice.name: voice for voice in server_info(synthesizer).tts[0].voices}
    assert [speaker.name for speaker in voices["cast/tone"].speakers] == ["tone", "low"]
    assert voices["fake/tone"].speakers is None
    registry = synthesizer.registry
    assert voice_fields({"name": "cast/tone", "speaker": "low"}, registry)["voice"] == "low"
    assert voice_fields({"name": "fake/tone", "speaker": "low"}, registry)["voice"] == "tone"


def test_a_name_without_a_served_engine_is_a_voice_and_no_name_asks_for_a_language():
    registry = make_synthesizer(FakeEngine()).registry

    assert voice_fields({"name": "fake/low"}, registry) == {
        "voice": "low", "model": "fake", "language": None,
    }  # fmt: skip
    assert voice_fields({"name": "alloy"}, registry)["model"] is None  # read as HTTP reads it
    assert voice_fields({"language": "en-US"}, registry) == {
        "voice": None, "model": None, "language": "en-US",
    }  # fmt: skip
    assert voice_fields(None, registry) == {"voice": None, "model": None, "language": None}
