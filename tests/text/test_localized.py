"""Numbers, dates, times, money and percentages read in the text's language; a language with no
normalizer spoken as written, never through the English rules."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from tests.conftest import running
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.engines.base import Capabilities, Voice
from voxserve.server.app import create_app
from voxserve.text import normalize_for
from voxserve.text.localized import LOCALES


@pytest.mark.parametrize(
    ("language", "written", "said"),
    [
        ("de", "Am 15.03.2024 um 14:30 Uhr.",
         "Am fünfzehnten März zweitausendvierundzwanzig um vierzehn Uhr dreißig."),
        ("de", "Es kostet 5,50 € oder 1.250 Euro.",
         "Es kostet fünf Euro und fünfzig Cent oder eintausendzweihundertfünfzig Euro."),
        ("de", "Der 3. Platz, zum 1. Mal, seit 1999.",
         "Der dritte Platz, zum ersten Mal, seit neunzehnhundertneunundneunzig."),
        ("de", "Es hat 20 °C, gestern -3°, und 3,5 % mehr.",
         "Es hat zwanzig Grad Celsius, gestern minus drei Grad, und drei Komma fünf Prozent mehr."),
        ("fr", "Le 1/05/2024 à 14h30, 12,50 € pour 1 250 personnes.",
         "Le premier mai deux mille vingt-quatre à quatorze heures trente, douze euros et "
         "cinquante centimes pour mille deux cent cinquante personnes."),
        ("fr", "Le 21e siècle, la 1re fois, 20 %.",
         "Le vingt et unième siècle, la première fois, vingt pour cent."),
        ("es", "El 01/02/2023 pagó $20 y el 3,5 % de la 1ª vez.",
         "El uno de febrero de dos mil veintitrés pagó veinte dólares y el tres coma cinco por "
         "ciento de la primera vez."),
        ("es", "A la 1:15 cuesta 12,05 €.",
         "A la una y quince cuesta doce euros con cinco céntimos."),
        ("it", "Il 1/3/2022 alle 9:05, 7,25 € per 1.000 persone, il 50%.",
         "Il primo marzo duemilaventidue alle nove e cinque, sette euro e venticinque centesimi "
         "per mille persone, il cinquanta per cento."),
        ("pt-BR", "Em 15/08/2021 às 16:45, R$ 35,90.",
         "Em quinze de agosto de dois mil e vinte e um às dezesseis e quarenta e cinco, trinta e "
         "cinco reais e noventa centavos."),
        ("pt-PT", "Às 16:45, 17 pessoas.", "Às dezasseis e quarenta e cinco, dezassete pessoas."),
        ("nl", "Op 2024-12-05 om 20:15 uur kost het €3,50, de 1e keer.",
         "Op vijf december tweeduizendvierentwintig om twintig uur vijftien kost het drie euro "
         "en vijftig cent, de eerste keer."),
    ],
)  # fmt: skip
def test_numbers_are_read_in_the_texts_language(language, written, said):
    assert normalize_for(written, language) == said


def test_markup_is_taken_out_as_for_english():
    assert normalize_for("**Achtung:** es sind 3 Fehler.", "de") == "Achtung: es sind drei Fehler."


@pytest.mark.parametrize("language", ["pl", "ja", "zh", "sv-SE"])
def test_a_language_without_a_normalizer_is_spoken_as_written(language):
    written = "Mam 5 kotów i 3,5 kg, o 14:30 (1/2)."
    assert normalize_for(written, language) == written


def test_no_english_rule_reaches_another_language():
    # The English normalizer would say "three kilometers" and "Doctor": here both stay.
    assert normalize_for("Dr. Weber läuft 3 km.", "de") == "Dr. Weber läuft drei km."


def test_what_is_not_a_date_or_time_is_not_read_as_one():
    said = normalize_for("Zimmer 31.13.2024 und 25:99.", "de")
    assert not any(month in said for month in LOCALES["de"].months)
    assert "Uhr" not in said and "fünfundzwanzig" in said


class GermanEngine(FakeEngine):
    """The fake with a German voice."""

    name = "german"

    def describe(self) -> Capabilities:
        return dataclasses.replace(super().describe(), languages=("de",))

    def voices(self) -> list[Voice]:
        return [Voice("anna", self.name, "Anna", "de")]


def test_a_german_voice_is_sent_german_numbers(tmp_path):
    engine = GermanEngine()
    synthesizer = make_synthesizer(engine, data_dir=tmp_path, default_engine="german",
                                   default_voice="anna")  # fmt: skip
    with running(create_app(synthesizer=synthesizer)) as url:
        answer = httpx.post(f"{url}/v1/audio/speech", timeout=30, json={
            "input": "Um 14:30 Uhr kostet es 5,50 €.", "voice": "anna", "response_format": "pcm",
        })  # fmt: skip
        assert answer.status_code == 200, answer.text
    assert engine.calls == ["Um vierzehn Uhr dreißig kostet es fünf Euro und fünfzig Cent."]


def test_every_locale_has_twelve_months_and_its_own_words():
    for language, locale in LOCALES.items():
        assert len(locale.months) == 12, language
        assert normalize_for("7", language) != "7"
