"""Dialogue scripts parse into turns."""

from __future__ import annotations

import pytest

from voxserve.text.dialogue import Turn, is_dialogue, parse_dialogue


def test_delimited_and_tagged_lines_with_continuations_and_a_narrator():
    script = """Once upon a time.
Alice|||Hello, Bob!
  How are you?

Bob ||| Fine, thanks.
[speaker0] Tagged line.
[SPEAKER1]
On the line after its tag.
"""
    assert parse_dialogue(script) == [
        Turn("", "Once upon a time."),
        Turn("Alice", "Hello, Bob!\nHow are you?"),
        Turn("Bob", "Fine, thanks."),
        Turn("SPEAKER0", "Tagged line."),
        Turn("SPEAKER1", "On the line after its tag."),
    ]


def test_a_custom_delimiter_and_text_that_holds_it_again():
    assert parse_dialogue("Ann::Hi :: there", delimiter="::") == [Turn("Ann", "Hi :: there")]


def test_detection():
    assert is_dialogue("A|||hi") and is_dialogue("[SPEAKER2] hi")
    assert not is_dialogue("Plain text [citation needed].")


@pytest.mark.parametrize("script", ["|||no speaker", "  |||  nobody"])
def test_a_turn_without_a_speaker_names_its_line(script):
    with pytest.raises(ValueError, match="line 1: no speaker"):
        parse_dialogue(script)


@pytest.mark.parametrize(
    ("script", "line", "who"),
    [
        ("A|||", 1, "'A'"),
        ("[SPEAKER0]", 1, "'SPEAKER0'"),
        ("[SPEAKER0] |||", 1, "'SPEAKER0'"),
        ("A|||Hi.\nB||| ... ", 2, "'B'"),
        ("A|||Hi.\n\n[SPEAKER1]\n", 3, "'SPEAKER1'"),
        ("!!!\nA|||Hi.", 1, "the narrator"),
    ],
)
def test_a_turn_with_nothing_to_say_names_its_line(script, line, who):
    # Such turns were dropped: a script of only them had no turns left (a 500), or one answered
    # 200 with no audio at all.
    with pytest.raises(ValueError, match=f"line {line}: the turn of {who} has nothing to say"):
        parse_dialogue(script)
