"""The text's language, detected, for requests without ``language`` on engines of several
languages: ``detect_language`` itself, and what resolution does with it (``language_mismatch``)."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from tests.fakes import FakeEngine, collect, make_synthesizer
from voxserve.engines.base import Capabilities, Voice
from voxserve.errors import InvalidRequestError
from voxserve.request import DialogueRequest, SpeechOptions, SpeechRequest
from voxserve.synthesis.dialogue import prepare_dialogue
from voxserve.synthesis.text_stream import TextStream
from voxserve.text import languages
from voxserve.text.languages import detect_language
from voxserve.voices import resolution
from voxserve.voices.profile import VoiceProfile

# Sentences of everyday length (13 to 44 characters; 6 to 11 in Japanese and Chinese).
SENTENCES = {
    "en": ["I will call you tomorrow morning.", "The quick brown fox jumps over the lazy dog."],
    "fr": ["Je vous appellerai demain matin.", "Nous sommes allés au marché hier."],
    "es": ["Te llamaré mañana por la mañana.", "¿Dónde está la estación?"],
    "de": ["Ich rufe dich morgen früh an.", "Wir waren gestern auf dem Markt."],
    "it": ["Ti chiamerò domani mattina.", "Siamo andati al mercato ieri."],
    "ja": ["明日の朝に電話します。", "今日はいい天気ですね。"],
    "zh": ["我明天早上给你打电话。", "你好。"],  # 你好 is Cantonese to the model: still zh
}
FRENCH = "Nous sommes allés au marché hier, et il faisait très beau."
ENGLISH = "We went to the market yesterday, and the weather was lovely."


@pytest.mark.parametrize(
    ("language", "text"), [(lang, text) for lang, texts in SENTENCES.items() for text in texts]
)
def test_a_sentence_is_detected_in_its_language(language, text):
    assert detect_language(text) == language


@pytest.mark.parametrize("text", ["Hello there.", "Ciao.", "Hallo.", "OK", "12:30", "", "?!"])
def test_a_word_or_two_and_text_without_words_are_no_answer(text):
    # Each of the words was taken for another language (Sotho, Kikuyu, Italian) with low
    # confidence: unsure is None, not a guess that would switch voices.
    assert detect_language(text) is None


def test_the_model_loads_once_however_many_threads_ask_first(monkeypatch):
    monkeypatch.setattr(languages, "_identifier", None)
    from py3langid.langid import LanguageIdentifier

    loads = []
    load = LanguageIdentifier.from_model_file.__func__

    def counting(cls, *args, **kwargs):
        loads.append(threading.get_ident())
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(LanguageIdentifier, "from_model_file", classmethod(counting))
    barrier = threading.Barrier(4)
    found = []

    def detect() -> None:
        barrier.wait()
        found.append(detect_language(FRENCH))

    threads = [threading.Thread(target=detect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and found == ["fr"] * 4


class Bilingual(FakeEngine):
    """An engine of English and French, with a voice of each and one that speaks both."""

    name = "bilingual"

    def describe(self) -> Capabilities:
        return dataclasses.replace(super().describe(), languages=("en-US", "fr-FR"))

    def voices(self) -> list[Voice]:
        return [
            Voice("heart", self.name, "Heart", "en-US"),
            Voice("siwis", self.name, "Siwis", "fr-FR"),
            Voice("both", self.name, "Both", "en-US", languages=("en-US", "fr-FR")),
        ]


def bilingual(tmp_path, **settings):
    return make_synthesizer(
        Bilingual(), data_dir=tmp_path, default_engine="bilingual", default_voice="heart",
        **settings,
    )  # fmt: skip


def test_a_voice_that_cannot_speak_the_text_is_replaced_by_one_that_can(tmp_path):
    synthesizer = bilingual(tmp_path)
    voicing = synthesizer.resolver.voicing(SpeechOptions(voice="heart"), text=FRENCH)
    assert voicing.voice.id == "siwis" and voicing.language == "fr-FR"
    assert voicing.ignored == ()
    # The text that matches the voice keeps it
    assert synthesizer.resolver.voicing(SpeechOptions(), text=ENGLISH).voice.id == "heart"


def test_the_answer_names_the_voice_that_speaks(tmp_path):
    from voxserve.server.openai import speech_headers

    prepared = bilingual(tmp_path).prepare(SpeechRequest(input=FRENCH, voice="heart"))
    assert speech_headers(prepared)["X-Voice"] == "siwis"


async def test_the_replacement_voice_is_the_one_that_speaks(tmp_path):
    synthesizer = bilingual(tmp_path)
    await collect(synthesizer, SpeechRequest(input=FRENCH, voice="heart"))
    assert {options.voice for options in synthesizer.registry.get("bilingual").options} == {"siwis"}


def test_refuse_answers_a_400_naming_language(tmp_path):
    synthesizer = bilingual(tmp_path, language_mismatch="refuse")
    with pytest.raises(InvalidRequestError) as caught:
        synthesizer.prepare(SpeechRequest(input=FRENCH, voice="heart"))
    assert (caught.value.param, caught.value.code) == ("language", "unsupported_language")
    assert "'fr'" in caught.value.message and "heart" in caught.value.message


def test_ignore_keeps_the_voice_asked_for(tmp_path):
    synthesizer = bilingual(tmp_path, language_mismatch="ignore")
    voicing = synthesizer.prepare(SpeechRequest(input=FRENCH, voice="heart")).voicing
    assert voicing.voice.id == "heart" and voicing.options.language is None


def test_a_bilingual_voice_speaks_the_texts_language(tmp_path):
    synthesizer = bilingual(tmp_path, language_mismatch="refuse")
    voicing = synthesizer.resolver.voicing(SpeechOptions(voice="both"), text=FRENCH)
    assert voicing.voice.id == "both" and voicing.options.language == "fr-FR"
    english = synthesizer.resolver.voicing(SpeechOptions(voice="both"), text=ENGLISH)
    assert english.options.language is None  # its own main language: nothing to say


def test_a_language_given_is_never_second_guessed(tmp_path, monkeypatch):
    synthesizer = bilingual(tmp_path, language_mismatch="refuse")
    monkeypatch.setattr(resolution, "detect_language", lambda text: pytest.fail("detected"))
    voicing = synthesizer.resolver.voicing(SpeechOptions(voice="heart", language="en"), text=FRENCH)
    assert voicing.voice.id == "heart"


def test_an_engine_of_one_language_detects_nothing(tmp_path, monkeypatch):
    # "en-US" and "en-GB" are one language: no detection, no cost, for Piper's English voices.
    synthesizer = make_synthesizer(FakeEngine(), data_dir=tmp_path, language_mismatch="refuse")
    monkeypatch.setattr(resolution, "detect_language", lambda text: pytest.fail("detected"))
    assert synthesizer.prepare(SpeechRequest(input=FRENCH)).voice.id == "tone"


def test_text_too_short_to_tell_keeps_the_voice(tmp_path):
    synthesizer = bilingual(tmp_path, language_mismatch="refuse")
    assert synthesizer.prepare(SpeechRequest(input="Bonjour.", voice="heart")).voice.id == "heart"


def test_a_profile_is_the_users_choice_and_is_kept(tmp_path):
    synthesizer = bilingual(tmp_path)
    profile = VoiceProfile(id="narrator", display_name="Narrator", voice="heart")
    synthesizer.resolver.voices.create(profile)
    assert synthesizer.resolver.voicing(SpeechOptions(voice="narrator"), text=FRENCH).voice.id == (
        "heart"
    )
    refusing = bilingual(tmp_path, language_mismatch="refuse")
    with pytest.raises(InvalidRequestError) as caught:
        refusing.resolver.voicing(SpeechOptions(voice="narrator"), text=FRENCH)
    assert caught.value.param == "language"


def test_each_dialogue_turn_is_voiced_for_its_own_text(tmp_path):
    synthesizer = bilingual(tmp_path)
    request = DialogueRequest(
        voices={"Ann": "heart", "Luc": "heart"},
        turns=[{"speaker": "Ann", "text": ENGLISH}, {"speaker": "Luc", "text": FRENCH}],
    )
    dialogue = prepare_dialogue(synthesizer, request)
    assert [voicing.voice.id for _, voicing in dialogue.turns] == ["heart", "siwis"]


async def test_text_pushed_in_pieces_is_detected_sentence_by_sentence(tmp_path):
    """A WebSocket's or an LLM's text: the voicing resolved at the start, before any text, is
    replaced for each sentence that reads as a language its voice does not speak."""
    synthesizer = bilingual(tmp_path)
    voicing = await synthesizer.resolver.resolve(SpeechOptions(voice="heart"))
    assert voicing.replaceable
    stream = TextStream(
        voicing,
        synthesizer.plan_options(voicing.engine),
        voicing_for=synthesizer.resolver.for_text,
    )
    await stream.push_in_thread(f"{ENGLISH} {FRENCH} ")
    await stream.end_in_thread()
    voices = [segment.voicing.voice.id async for segment in stream.segments()]
    assert voices[0] == "heart" and voices[-1] == "siwis"


async def test_pushed_text_keeps_a_profile_or_a_given_language(tmp_path):
    synthesizer = bilingual(tmp_path)
    given = await synthesizer.resolver.resolve(SpeechOptions(voice="heart", language="en"))
    assert synthesizer.resolver.for_text(given, FRENCH) is given
    ignoring = bilingual(tmp_path / "ignore", language_mismatch="ignore")
    voicing = await ignoring.resolver.resolve(SpeechOptions(voice="heart"))
    assert ignoring.resolver.for_text(voicing, FRENCH).voice.id == "heart"
