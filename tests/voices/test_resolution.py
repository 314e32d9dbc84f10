"""Voice resolution: names per engine, checks against the chosen voice, nothing dropped unseen."""

from __future__ import annotations

import threading

import pytest

from tests.fakes import FakeEngine, make_synthesizer
from voxserve.engines.base import Voice
from voxserve.errors import InvalidRequestError
from voxserve.request import SpeechOptions, SpeechRequest


class KokoroLike(FakeEngine):
    """An engine with voices of its own and none of the built-ins OpenAI's names map to."""

    name = "kokoro"

    def voices(self) -> list[Voice]:
        return [
            Voice("af_heart", self.name, "Heart", "en-US"),
            Voice("ff_siwis", self.name, "Siwis", "fr"),
        ]


class OpenAILike(FakeEngine):
    """An engine whose own voices are OpenAI's names."""

    name = "openai"

    def voices(self) -> list[Voice]:
        return [Voice("alloy", self.name, "Alloy", "en"), Voice("nova", self.name, "Nova", "en")]


def test_an_openai_name_maps_on_the_requested_engine_only(tmp_path):
    # With a kokoro-like default, "alloy" was mapped to joe and then served by piper: a voice
    # from another engine than the one configured, unannounced.
    synthesizer = make_synthesizer(KokoroLike(), data_dir=tmp_path, default_engine="kokoro",
                                   default_voice="af_heart")  # fmt: skip
    with pytest.raises(InvalidRequestError) as caught:
        synthesizer.prepare(SpeechRequest(input="Hi.", voice="alloy"))
    assert (caught.value.param, caught.value.code) == ("voice", "voice_not_found")
    assert "kokoro" in caught.value.message


def test_an_engine_that_has_its_own_alloy_keeps_it(tmp_path):
    # model="openai", voice="alloy" failed with "unknown voice 'joe'": the global alias came first
    synthesizer = make_synthesizer(FakeEngine(), data_dir=tmp_path)
    synthesizer.registry.register(OpenAILike())
    voicing = synthesizer.resolver.voicing(SpeechOptions(model="openai", voice="alloy"))
    assert (voicing.engine.name, voicing.voice.id) == ("openai", "alloy")


def test_an_engine_alias_of_its_own_comes_before_the_openai_names(tmp_path):
    engine = FakeEngine(voice_aliases={"alloy": "low", "narrator": "tone"})
    synthesizer = make_synthesizer(engine, data_dir=tmp_path)
    synthesizer.settings.voice_aliases["alloy"] = "tone"
    assert synthesizer.resolver.voicing(SpeechOptions(voice="alloy")).voice.id == "low"
    assert synthesizer.resolver.voicing(SpeechOptions(voice="Narrator")).voice.id == "tone"


def test_no_voice_on_another_engine_is_that_engines_first_voice(tmp_path):
    synthesizer = make_synthesizer(FakeEngine(), data_dir=tmp_path)
    synthesizer.registry.register(KokoroLike())
    voicing = synthesizer.resolver.voicing(SpeechOptions(model="kokoro"))
    assert voicing.voice.id == "af_heart"


def test_language_is_checked_against_the_voice_not_the_engine(tmp_path):
    # The engine speaks French with one voice; an English voice asked for French is refused
    synthesizer = make_synthesizer(KokoroLike(), data_dir=tmp_path, default_engine="kokoro",
                                   default_voice="af_heart")  # fmt: skip
    with pytest.raises(InvalidRequestError) as caught:
        synthesizer.resolver.voicing(SpeechOptions(voice="af_heart", language="fr"))
    assert (caught.value.param, caught.value.code) == ("language", "unsupported_language")
    assert "af_heart" in caught.value.message
    voicing = synthesizer.resolver.voicing(SpeechOptions(voice="ff_siwis", language="fr-FR"))
    assert voicing.language == "fr-FR"


@pytest.mark.parametrize("follows", [True, False])
def test_instructions_reach_engines_that_follow_them_and_are_reported_ignored_by_the_rest(
    tmp_path, follows
):
    synthesizer = make_synthesizer(FakeEngine(instructions=follows), data_dir=tmp_path)
    voicing = synthesizer.resolver.voicing(SpeechOptions(instructions="Speak softly."))
    if follows:
        assert voicing.options.instructions == "Speak softly." and voicing.ignored == ()
    else:
        assert voicing.options.instructions is None and voicing.ignored == ("instructions",)


def test_home_assistants_none_string_is_no_instructions():
    assert SpeechOptions(instructions="None").instructions is None
    assert SpeechOptions(instructions="Nonetheless, slowly.").instructions is not None


async def test_resolution_runs_off_the_event_loop(tmp_path):
    synthesizer = make_synthesizer(FakeEngine(), data_dir=tmp_path)
    looked_up_in = []
    find = synthesizer.resolver.voices.find

    def recording_find(name: str):
        looked_up_in.append(threading.get_ident())
        return find(name)

    synthesizer.resolver.voices.find = recording_find
    voicing = await synthesizer.resolver.resolve(SpeechOptions(voice="low"))
    assert voicing.voice.id == "low"
    assert looked_up_in and threading.get_ident() not in looked_up_in
