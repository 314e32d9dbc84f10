"""Caption files from timed words: formats, timestamps and the cue rules."""

from __future__ import annotations

import json
import re

import pytest

from voxserve.audio.captions import (
    MAX_CUE_SECONDS,
    MAX_LINE_CHARS,
    MAX_LINES,
    caption_format_for_path,
    cues,
    render_captions,
    sentences,
    to_srt,
    to_vtt,
)
from voxserve.audio.frames import WordTiming
from voxserve.errors import InvalidRequestError


def timed(text: str, start: float = 0.0, seconds_per_word: float = 0.4) -> list[WordTiming]:
    """Each word of ``text`` lasting ``seconds_per_word``, one after the other."""
    return [
        WordTiming(word, start + i * seconds_per_word, start + (i + 1) * seconds_per_word)
        for i, word in enumerate(text.split())
    ]


def test_srt_blocks_are_numbered_with_comma_milliseconds() -> None:
    words = [WordTiming("Hello", 3661.2344, 3661.5), WordTiming("world.", 3661.5, 3662.0005)]
    assert to_srt(words) == "1\n01:01:01,234 --> 01:01:02,000\nHello world.\n\n"


def test_vtt_has_its_header_dot_milliseconds_and_escaped_text() -> None:
    words = [
        WordTiming("Fish", 0.0, 0.25),
        WordTiming("&", 0.25, 0.5),
        WordTiming("<chips>", 0.5, 1),
    ]
    assert to_vtt(words) == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nFish &amp; &lt;chips&gt;\n\n"


def test_a_sentence_end_ends_its_cue() -> None:
    made = cues(timed('One two. "Three four?" Five! Six'))
    assert [cue.lines for cue in made] == [
        ("One two.",), ('"Three four?"',), ("Five!",), ("Six",),
    ]  # fmt: skip


def test_long_sentences_break_into_cues_of_two_even_lines() -> None:
    text = (
        "This sentence goes on and on with many words in it, far more than a single cue "
        "could ever hold on screen at once, so that it must be broken into several cues"
    )
    made = cues(timed(text, seconds_per_word=0.2))
    assert len(made) > 1
    assert " ".join(line for cue in made for line in cue.lines) == text  # nothing lost
    for cue in made:
        assert len(cue.lines) <= MAX_LINES
        assert all(len(line) <= MAX_LINE_CHARS for line in cue.lines)
    full = made[0].lines
    assert len(full) == 2 and abs(len(full[0]) - len(full[1])) < 10  # balanced, not greedy


def test_a_cue_lasts_at_most_its_limit() -> None:
    made = cues(timed("slow " * 12, seconds_per_word=1.5))
    assert len(made) > 1
    assert all(cue.end - cue.start <= MAX_CUE_SECONDS for cue in made)


def test_cues_are_in_order_and_do_not_overlap() -> None:
    made = cues(timed("A first one. Then another, longer than the first one by far. End.", 2.0))
    assert all(a.end <= b.start for a, b in zip(made, made[1:], strict=False))
    assert made[0].start == 2.0


def test_one_overlong_word_gets_a_cue_of_its_own() -> None:
    word = "x" * (MAX_LINE_CHARS + 5)
    made = cues(timed(f"before {word} after"))
    assert [cue.lines for cue in made] == [("before",), (word,), ("after",)]


def test_json_has_words_and_sentences() -> None:
    document = json.loads(render_captions(timed("Hi there. Bye now"), "json"))
    assert document["words"][0] == {"word": "Hi", "start": 0.0, "end": 0.4}
    assert document["sentences"] == [
        {"text": "Hi there.", "start": 0.0, "end": 0.8},
        {"text": "Bye now", "start": 0.8, "end": 1.6},
    ]


def test_srt_parses_back_to_its_words() -> None:
    words = timed("Captions are fun. They help people follow along with the speech.")
    blocks = to_srt(words).strip().split("\n\n")
    assert [block.split("\n")[0] for block in blocks] == [str(n) for n in range(1, len(blocks) + 1)]
    stamp = re.compile(r"\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d")
    assert all(stamp.fullmatch(block.split("\n")[1]) for block in blocks)
    said = " ".join(" ".join(block.split("\n")[2:]) for block in blocks)
    assert said == " ".join(word.text for word in words)


def test_sentences_group_words() -> None:
    found = sentences(timed("One. Two three… Four"))
    assert [s.text for s in found] == ["One.", "Two three…", "Four"]


@pytest.mark.parametrize(
    ("name", "expected"), [("a.srt", "srt"), ("b.VTT", "vtt"), ("c.json", "json")]
)
def test_format_from_a_path(name: str, expected: str) -> None:
    assert caption_format_for_path(name) == expected


def test_a_path_of_another_kind_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidRequestError) as raised:
        caption_format_for_path("out.txt")
    assert raised.value.param == "captions"
    assert ".srt" in raised.value.message
