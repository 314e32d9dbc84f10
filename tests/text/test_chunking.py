"""Chunking sentences to an engine's limit, and planning the fragments of a text."""

from __future__ import annotations

import dataclasses
import random

import pytest

from voxserve.text import Fragment, chunk_sentence, plan_fragments

LONG_SENTENCE = (
    "When the weather is nice, and the birds are singing, we like to walk along the river; "
    "sometimes we stop for coffee \u2014 or tea \u2014 and we talk about everything that "
    "happened during the week because it is relaxing."
)


def _assert_valid_chunks(sentence: str, pieces: list[str], max_chars: int) -> None:
    assert all(piece and piece == piece.strip() for piece in pieces)
    assert all(len(piece) <= max_chars for piece in pieces)
    assert " ".join(pieces).split() == sentence.split()


def test_a_short_sentence_is_one_piece() -> None:
    assert chunk_sentence("  Short and sweet.  ", 100) == ["Short and sweet."]


def test_empty_sentence_gives_no_pieces() -> None:
    assert chunk_sentence("   ", 10) == []


def test_splits_at_clause_boundaries_first() -> None:
    pieces = chunk_sentence(LONG_SENTENCE, 60)
    assert pieces == [
        "When the weather is nice, and the birds are singing,",
        "we like to walk along the river;",
        "sometimes we stop for coffee \u2014 or tea \u2014",
        "and we talk about everything that happened during the week",
        "because it is relaxing.",
    ]
    _assert_valid_chunks(LONG_SENTENCE, pieces, 60)


def test_splits_before_conjunctions_without_clause_punctuation() -> None:
    sentence = "We walked along the quiet river and we talked about the week because it was late"
    assert chunk_sentence(sentence, 40) == [
        "We walked along the quiet river",
        "and we talked about the week",
        "because it was late",
    ]


def test_splits_between_words_as_a_last_resort_but_one() -> None:
    sentence = "one two three four five six seven eight nine ten eleven twelve"
    pieces = chunk_sentence(sentence, 15)
    assert pieces == ["one two three", "four five six", "seven eight", "nine ten eleven", "twelve"]


def test_cuts_a_single_overlong_token() -> None:
    token = "supercalifragilisticexpialidocious"
    pieces = chunk_sentence(f"{token} indeed", 10)
    assert pieces[:4] == ["supercalif", "ragilistic", "expialidoc", "ious"]
    assert "".join(pieces[:4]) == token
    assert all(len(piece) <= 10 for piece in pieces)


def test_rejects_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        chunk_sentence("Hello.", 0)


def test_random_sentences_respect_the_limit_and_keep_every_word() -> None:
    rng = random.Random(11)
    words = [
        "a",
        "tiny",
        "word,",
        "longer-words",
        "and",
        "but;",
        "\u2014",
        "because",
        "x" * 30,
        "end:",
    ]
    for _ in range(300):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(1, 40)))
        max_chars = rng.randint(5, 80)
        pieces = chunk_sentence(sentence, max_chars)
        assert all(0 < len(piece) <= max_chars and piece == piece.strip() for piece in pieces)
        assert "".join("".join(pieces).split()) == "".join(sentence.split())


def test_plan_makes_the_first_piece_small() -> None:
    fragments = plan_fragments("Okay then, we start now, and go. Next one, please.", 200)
    assert fragments == [
        Fragment("Okay then,", ends_sentence=False),
        Fragment("we start now, and go.", ends_sentence=True),
        Fragment("Next one, please.", ends_sentence=True),
    ]


def test_plan_keeps_a_one_word_first_clause() -> None:
    fragments = plan_fragments("Well, hello there. Bye.", 200)
    assert [fragment.text for fragment in fragments] == ["Well, hello there.", "Bye."]
    fragments = plan_fragments("Well, hello there. Bye.", 200, first_min_words=1)
    assert [fragment.text for fragment in fragments] == ["Well,", "hello there.", "Bye."]


def test_plan_without_small_first() -> None:
    fragments = plan_fragments("Okay then, we start now. Next.", 200, small_first=False)
    assert fragments == [Fragment("Okay then, we start now.", True), Fragment("Next.", True)]


def test_plan_marks_only_the_last_piece_of_each_sentence() -> None:
    text = f"{LONG_SENTENCE} Short one. {LONG_SENTENCE}"
    fragments = plan_fragments(text, 60)
    assert all(len(fragment.text) <= 60 for fragment in fragments)
    assert " ".join(fragment.text for fragment in fragments).split() == text.split()
    ends = [index for index, fragment in enumerate(fragments) if fragment.ends_sentence]
    assert len(ends) == 3 and ends[-1] == len(fragments) - 1
    assert fragments[0].text == "When the weather is nice,"


def test_plan_does_not_normalize() -> None:
    assert plan_fragments("It costs $5.", 100) == [Fragment("It costs $5.", True)]


def test_plan_of_nothing_is_empty() -> None:
    assert plan_fragments("  \n ", 100) == []


def test_fragment_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Fragment("Hi.", True).text = "Bye."  # type: ignore[misc]
