"""``<say-as>`` read as words in the voicing's language, through the text normalizers."""

from __future__ import annotations

import pytest

from voxserve.errors import InvalidRequestError
from voxserve.text.pauses import MAX_PAUSE_SECONDS, parse_duration, split_pauses
from voxserve.text.say_as import say_as


@pytest.mark.parametrize(
    ("kind", "written", "language", "date_format", "spoken"),
    [
        ("characters", "R2d2", "en", None, "R, two, D, two"),
        ("characters", "abc", "es", None, "A, B, C"),
        ("cardinal", "-1,234", "en", None, "minus one thousand two hundred thirty-four"),
        ("cardinal", "1984", "en", None, "one thousand nine hundred eighty-four"),  # not a year
        ("cardinal", "1984", "de", None, "eintausendneunhundertvierundachtzig"),
        ("cardinal", "1.250", "de", None, "eintausendzweihundertfünfzig"),
        ("cardinal", "42", "pl", None, "42"),  # no words for Polish: as written, as in text
        ("ordinal", "3rd", "en", None, "third"),
        ("ordinal", "21", "en", None, "twenty-first"),
        ("ordinal", "2e", "fr", None, "deuxième"),
        ("date", "03/15/2024", "en", None, "March fifteenth, twenty twenty-four"),
        ("date", "15/03/2024", "en", "dmy", "March fifteenth, twenty twenty-four"),
        ("date", "2024.03.15", "en", "ymd", "March fifteenth, twenty twenty-four"),
        ("date", "15.03.2024", "fr", None, "quinze mars deux mille vingt-quatre"),
        ("date", "2024-03-15", "de", None, "fünfzehnter März zweitausendvierundzwanzig"),
        ("time", "14:30", "en", None, "fourteen thirty"),
        ("time", "3:30 pm", "en", None, "three thirty p m"),
        ("time", "14h30", "fr", None, "quatorze heures trente"),
        ("telephone", "+1 (555) 123-4567", "en", None,
         "plus one, five five five, one two three, four five six seven"),
        ("telephone", "030 1234", "de", None, "null drei null, eins zwei drei vier"),
    ],
)  # fmt: skip
def test_each_kind_in_each_language(kind, written, language, date_format, spoken):
    assert say_as(kind, written, language, date_format) == spoken


@pytest.mark.parametrize(
    ("kind", "written"),
    [("cardinal", "abc"), ("ordinal", "first"), ("date", "13/45/2024"), ("date", "soon"),
     ("time", "25:99"), ("time", "13:00 pm"), ("telephone", "call me"), ("characters", "  ")],
)  # fmt: skip
def test_what_a_kind_cannot_read_is_refused(kind, written):
    with pytest.raises(ValueError):
        say_as(kind, written, "en")


def test_pause_tags_split_the_text_and_are_never_left_in_it():
    assert split_pauses("Hi.[pause:1.5s] There [PAUSE:250ms][pause: 2 s]end") == [
        "Hi.", 1.5, " There ", 0.25, 2.0, "end",
    ]  # fmt: skip
    assert split_pauses("No tags, [brackets] stay.") == ["No tags, [brackets] stay."]


@pytest.mark.parametrize("written", ["1.5", "fast", "-1s", "1.5 minutes", ""])
def test_a_tag_that_is_not_a_duration_is_refused_naming_the_field(written):
    with pytest.raises(InvalidRequestError) as caught:
        split_pauses(f"a [pause:{written}] b", param="turns")
    assert caught.value.param == "turns"
    assert f"[pause:{written}]" in caught.value.message


def test_pauses_are_bounded():
    assert parse_duration(f"{MAX_PAUSE_SECONDS:g}s", "input", "x") == MAX_PAUSE_SECONDS
    with pytest.raises(InvalidRequestError, match="longer than the maximum"):
        parse_duration("10001ms", "input", "x")
