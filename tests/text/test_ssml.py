"""The SSML subset parsed: every element, nesting, breaks, and every refusal saying where."""

from __future__ import annotations

import pytest

from voxserve.errors import InvalidRequestError
from voxserve.text.ssml import STRENGTHS, Break, Words, looks_like_ssml, parse_ssml


def words(document: str) -> list[Words]:
    return [item for item in parse_ssml(document).items if isinstance(item, Words)]


def refusal(document: str) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        parse_ssml(document)
    assert caught.value.param == "input"
    return caught.value.message


def test_plain_text_in_speak_is_one_item_with_no_markup():
    document = parse_ssml('<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis">'
                          "Hello &amp; welcome\n to the show.</speak>")  # fmt: skip
    assert [item.text for item in document.items] == ["Hello & welcome\n to the show."]
    assert document.text == "Hello & welcome\n to the show."
    assert document.language is None


def test_nesting_passes_rate_voice_and_kind_inward():
    document = (
        '<speak xml:lang="en-US"><p><s>Count <prosody rate="50%">slowly: '
        '<say-as interpret-as="cardinal">42</say-as></prosody></s></p>'
        '<voice name="deep_male"><prosody rate="+100%"><prosody rate="x-slow">both</prosody>'
        "</prosody></voice></speak>"
    )
    parsed = parse_ssml(document)
    assert parsed.language == "en-US"
    assert [(w.text, w.rate, w.interpret_as, w.voice) for w in words(document)] == [
        ("Count ", 1.0, None, None),
        ("slowly: ", 0.5, None, None),
        ("42", 0.5, "cardinal", None),
        ("both", 2.0 * 0.5, None, "deep_male"),  # nested rates multiply
    ]
    breaks = [item for item in parsed.items if isinstance(item, Break)]
    assert breaks == [Break(None, explicit=False), Break(STRENGTHS["strong"], explicit=False)]


@pytest.mark.parametrize(
    ("attributes", "seconds"),
    [
        ('time="500ms"', 0.5),
        ('time="1.5s"', 1.5),
        ('time="2s" strength="weak"', 2.0),  # time wins
        ('strength="none"', 0.0),
        ('strength="x-weak"', 0.1),
        ('strength="weak"', 0.25),
        ('strength="medium"', 0.4),
        ('strength="strong"', 0.75),
        ('strength="x-strong"', 1.25),
        ("", 0.4),  # a bare break is medium
    ],
)
def test_break_times_and_strengths(attributes, seconds):
    items = parse_ssml(f"<speak>A<break {attributes}/>B</speak>").items
    assert items[1] == Break(seconds, explicit=True)
    assert [item.text for item in items if isinstance(item, Words)] == ["A", "B"]


@pytest.mark.parametrize(
    ("rate", "expected"),
    [("x-slow", 0.5), ("slow", 0.75), ("medium", 1.0), ("fast", 1.25), ("x-fast", 1.75),
     ("80%", 0.8), ("+20%", 1.2), ("-20%", 0.8)],
)  # fmt: skip
def test_prosody_rates(rate, expected):
    (item,) = words(f'<speak><prosody rate="{rate}">text</prosody></speak>')
    assert item.rate == pytest.approx(expected)


def test_sub_speaks_its_alias_and_say_as_keeps_its_format():
    items = words(
        '<speak><sub alias="World Wide Web Consortium">W3C</sub> on '
        '<say-as interpret-as="date" format="dmy">15/03/2024</say-as>'
        '<emphasis level="strong">now</emphasis></speak>'
    )
    assert [(i.text, i.interpret_as, i.date_format, i.emphasis) for i in items] == [
        ("World Wide Web Consortium", None, None, None),
        (" on ", None, None, None),
        ("15/03/2024", "date", "dmy", None),
        ("now", None, None, "strong"),
    ]


def test_malformed_xml_names_line_and_column():
    message = refusal("<speak>\n  <p>one</p>\n  <s>two</p>\n</speak>")
    assert message == "SSML line 3, column 11: mismatched tag"


def test_a_doctype_is_refused_so_no_entity_is_ever_expanded():
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE speak [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><speak>&lol2;</speak>'
    )
    assert "DOCTYPE" in refusal(laughs)
    external = '<!DOCTYPE speak SYSTEM "file:///etc/passwd"><speak>hi</speak>'
    assert "DOCTYPE" in refusal(external)


def test_an_undeclared_entity_is_an_error_not_text():
    assert refusal("<speak>&secret;</speak>") == "SSML line 1, column 8: undefined entity"


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ("<speak><audio src='x.wav'/></speak>", "<audio>"),
        ("<speak><phoneme ph='x'>a</phoneme></speak>", "<phoneme>"),
        ("<speak><p class='x'>a</p></speak>", "'class' of <p>"),
        ("<speak><voice gender='female'>a</voice></speak>", "'gender' of <voice>"),
        ("<speak><prosody pitch='high'>a</prosody></speak>", "<prosody pitch>"),
        ("<speak><prosody volume='loud'>a</prosody></speak>", "<prosody volume>"),
        ("<speak><prosody rate='quick'>a</prosody></speak>", "rate='quick'"),
        ("<speak><break strength='huge'/></speak>", "strength='huge'"),
        ("<speak><break time='forever'/></speak>", "'forever'"),
        ("<speak><break time='11s'/></speak>", "11 s is longer than the maximum"),
        ("<speak><say-as interpret-as='verbatim'>a</say-as></speak>", "interpret-as='verbatim'"),
        ("<speak><say-as interpret-as='cardinal' format='x'>1</say-as></speak>", "format='x'"),
        ("<speak><say-as interpret-as='date'><break/></say-as></speak>", "not <break>"),
        ("<speak><sub>a</sub></speak>", "<sub> needs an alias"),
        ("<speak><voice>a</voice></speak>", "<voice> needs a name"),
        ("<speak><break>words</break></speak>", "<break> holds no text"),
        ("<p>not in speak</p>", "the root element must be <speak>"),
        ("<speak><speak>a</speak></speak>", "only the root"),
    ],
)
def test_anything_outside_the_subset_is_refused_by_name_and_place(document, named):
    message = refusal(document)
    assert named in message
    assert message.startswith("SSML line 1, column ")


def test_refusals_point_at_the_element():
    message = refusal("<speak>\nfine\n   <mark name='x'/></speak>")
    assert message.startswith("SSML line 3, column 4: ")


@pytest.mark.parametrize(
    ("text", "ssml"),
    [("<speak>x</speak>", True), ("\n  <speak version='1.0'>x</speak>", True),
     ("<speaker>x</speaker>", False), ("say <speak>", False), ("Hello", False)],
)  # fmt: skip
def test_detection_by_the_opening_tag(text, ssml):
    assert looks_like_ssml(text) is ssml
