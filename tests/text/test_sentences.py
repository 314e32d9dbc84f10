"""Sentence splitting: a golden corpus of tricky cases, and the streaming buffer's equivalence."""

from __future__ import annotations

import random
import re

import pytest

from voxserve.text import SentenceBuffer, normalize_text, split_sentences

GOLDEN = [
    # Plain terminators.
    ("Hello world. How are you? I'm fine!", ["Hello world.", "How are you?", "I'm fine!"]),
    ("Really?! Yes!! No?", ["Really?!", "Yes!!", "No?"]),
    ("I love it!!! Really.", ["I love it!!!", "Really."]),
    ("The end", ["The end"]),
    ("Hello!How are you", ["Hello!How are you"]),
    ("  Leading and trailing.  ", ["Leading and trailing."]),
    ("", []),
    (" \n\n ", []),
    # Abbreviations and titles.
    ("Dr. Smith arrived. He sat.", ["Dr. Smith arrived.", "He sat."]),
    ("This is for Mr. and Mrs. Jones.", ["This is for Mr. and Mrs. Jones."]),
    ("Meet the new Mr. and Mrs.", ["Meet the new Mr. and Mrs."]),
    ("Prof. Walker, I presume. Yes.", ["Prof. Walker, I presume.", "Yes."]),
    ("Use e.g. this one, i.e. that one. Fine.", ["Use e.g. this one, i.e. that one.", "Fine."]),
    ("Apples, pears, etc. and more. Done.", ["Apples, pears, etc. and more.", "Done."]),
    ("Apples, pears, etc. The next one.", ["Apples, pears, etc.", "The next one."]),
    ("The U.S. law is clear.", ["The U.S. law is clear."]),
    ("She lives in the U.S. Her brother too.", ["She lives in the U.S.", "Her brother too."]),
    ("U.S.A. and N.A.S.A. are names.", ["U.S.A. and N.A.S.A. are names."]),
    ("J. R. R. Tolkien wrote it. Then he died.", ["J. R. R. Tolkien wrote it.", "Then he died."]),
    ("It was Jan. 5 when we met. The end.", ["It was Jan. 5 when we met.", "The end."]),
    ("No. 5 is best. No. I disagree.", ["No. 5 is best.", "No.", "I disagree."]),
    (
        "Acme Inc. is big. Acme Inc. Products are too.",
        ["Acme Inc. is big.", "Acme Inc.", "Products are too."],
    ),
    # Numbers, money, versions, times.
    ("Pi is 3.14 today. Yes.", ["Pi is 3.14 today.", "Yes."]),
    ("The number pi is 3.14159.", ["The number pi is 3.14159."]),
    ("Valid scientific notation 1.23e4.", ["Valid scientific notation 1.23e4."]),
    ("It costs $3.50 now. Pay.", ["It costs $3.50 now.", "Pay."]),
    ("Version v1.2.3 is out. Update.", ["Version v1.2.3 is out.", "Update."]),
    ("He was born in 1990. He grew up.", ["He was born in 1990.", "He grew up."]),
    ("For information, call 411. Thanks.", ["For information, call 411.", "Thanks."]),
    ("My number is 123-456-7890. Call me.", ["My number is 123-456-7890.", "Call me."]),
    ("Meet at 10 a.m. tomorrow. Bye.", ["Meet at 10 a.m. tomorrow.", "Bye."]),
    ("It still early, it's 3:00 a.m.", ["It still early, it's 3:00 a.m."]),
    ("Be there at 10 a.m. Then lunch.", ["Be there at 10 a.m.", "Then lunch."]),
    ("Chapter 3. The start.", ["Chapter 3.", "The start."]),
    # Addresses.
    ("Visit example.com/page. Then leave.", ["Visit example.com/page.", "Then leave."]),
    ("My email is foo.bar@pipecat.ai. Write.", ["My email is foo.bar@pipecat.ai.", "Write."]),
    (
        "My emails are foo@pipecat.ai and bar@pipecat.ai.",
        ["My emails are foo@pipecat.ai and bar@pipecat.ai."],
    ),
    (
        "My email is spell(foo.bar@pipecat.ai). Ok.",
        ["My email is spell(foo.bar@pipecat.ai).", "Ok."],
    ),
    # Ellipses.
    ("Wait... what? Sure.", ["Wait... what?", "Sure."]),
    ("Wait... What happened?", ["Wait...", "What happened?"]),
    ("Wait\u2026 what?", ["Wait\u2026 what?"]),
    ("This is a sentence . . . And another.", ["This is a sentence . . .", "And another."]),
    # Quotations and brackets.
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ('"Stop!" he said. "Why?" she asked.', ['"Stop!" he said.', '"Why?" she asked.']),
    ("She said 'no.' He agreed.", ["She said 'no.'", "He agreed."]),
    ("(This is it.) And more.", ["(This is it.)", "And more."]),
    # Lines, paragraphs and lists.
    ("Line one\nline two.", ["Line one line two."]),
    ("Line one.\nLine two.", ["Line one.", "Line two."]),
    ("Paragraph one\n\nParagraph two", ["Paragraph one", "Paragraph two"]),
    ("The end.\n\n\nNew start.", ["The end.", "New start."]),
    ("Items:\n- one\n- two\n* three", ["Items:", "- one", "- two", "* three"]),
    ("Steps:\n1. Do this\n2. Do that", ["Steps:", "1. Do this", "2. Do that"]),
    ("1. First item. Second sentence.", ["1. First item.", "Second sentence."]),
    ("Mr.\nSmith came.", ["Mr. Smith came."]),
    ("Wait...\nwhat now?", ["Wait...", "what now?"]),
    # Normalized text ("U.S." spelled "U S").
    ("She moved to the U S. Then she left.", ["She moved to the U S.", "Then she left."]),
    ("Meet at seven a m. Then eat.", ["Meet at seven a m.", "Then eat."]),
    # Other scripts.
    ("你好。世界！你好吗？", ["你好。", "世界！", "你好吗？"]),
    ("「你好。」他说。", ["「你好。」", "他说。"]),
    ("नमस्ते। आप कैसे हैं?", ["नमस्ते।", "आप कैसे हैं?"]),
]
TEXTS = [text for text, _ in GOLDEN]


@pytest.mark.parametrize(("text", "sentences"), GOLDEN, ids=[text[:40] for text in TEXTS])
def test_golden(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def _streamed(chunks: list[str]) -> list[str]:
    buffer = SentenceBuffer()
    released = [sentence for chunk in chunks for sentence in buffer.push(chunk)]
    return released + buffer.flush()


def _random_chunks(text: str, rng: random.Random, longest: int) -> list[str]:
    chunks, start = [], 0
    while start < len(text):
        size = rng.randint(1, longest)
        chunks.append(text[start : start + size])
        start += size
    return chunks


_DOCUMENT = "\n\n".join(TEXTS)
_STREAMED_TEXTS = [*TEXTS, _DOCUMENT, normalize_text(_DOCUMENT)]
_STREAMED_IDS = [text[:30] for text in _STREAMED_TEXTS]


@pytest.mark.parametrize("text", _STREAMED_TEXTS, ids=_STREAMED_IDS)
def test_buffer_matches_splitter_character_by_character(text: str) -> None:
    assert _streamed(list(text)) == split_sentences(text)


@pytest.mark.parametrize("text", _STREAMED_TEXTS, ids=_STREAMED_IDS)
def test_buffer_matches_splitter_token_by_token(text: str) -> None:
    tokens = re.findall(r"\s*\S+|\s+", text)  # what an LLM streams: words with leading space
    assert _streamed(tokens) == split_sentences(text)


@pytest.mark.parametrize("text", _STREAMED_TEXTS, ids=_STREAMED_IDS)
def test_buffer_matches_splitter_in_random_chunks(text: str) -> None:
    rng = random.Random(20240315)
    expected = split_sentences(text)
    for longest in (2, 5, 17, 80):
        assert _streamed(_random_chunks(text, rng, longest)) == expected


def test_buffer_matches_splitter_on_random_tricky_texts() -> None:
    pieces = [
        "Dr.", "etc.", "e.g.", "U.S.", "3.", "3.14", "...", "\u2026", ".", "!", "?!", '"', ")",
        "word", "Word", "J.", "1.", "-", "\n", "\n\n", " ", "\u3002", "\u300d", "a.m.", "No.", "5",
        " . ", "\n- ", "\n12. ", "example.com.",
    ]  # fmt: skip
    rng = random.Random(7)
    for _ in range(500):
        text = "".join(
            rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(1, 20))
        )
        assert _streamed(_random_chunks(text, rng, 4)) == split_sentences(text), text


def test_releases_a_sentence_once_its_end_is_certain() -> None:
    buffer = SentenceBuffer()
    assert buffer.push("Hello world.") == []  # "Hello world.com" may follow
    assert buffer.push(" ") == ["Hello world."]
    assert buffer.push("How are") == []
    assert buffer.push(" you? I") == ["How are you?"]
    assert buffer.flush() == ["I"]


@pytest.mark.parametrize(
    "text",
    [
        "Ask Dr. ",
        "Pi is 3.",
        "Use e.g. ",
        "In the U.S. ",
        "Wait... ",
        "Fruit, etc. ",
        "Meet at 10 a.m. ",
    ],
)
def test_holds_back_what_may_continue(text: str) -> None:
    buffer = SentenceBuffer()
    assert all(buffer.push(character) == [] for character in text)
    assert buffer.flush() == [text.strip()]


def test_waits_for_the_next_character_where_it_decides() -> None:
    buffer = SentenceBuffer()
    assert buffer.push("In the U.S. ") == []
    assert buffer.push("law") == []
    assert buffer.push(" applies. ") == ["In the U.S. law applies."]

    buffer = SentenceBuffer()
    assert buffer.push("Apples, etc. ") == []
    assert buffer.push("The") == ["Apples, etc."]


def test_flush_empties_the_buffer() -> None:
    buffer = SentenceBuffer()
    buffer.push("One. Two")
    assert buffer.flush() == ["Two"]
    assert buffer.flush() == []
    assert buffer.push("Three. ") == ["Three."]


def test_many_single_characters_without_an_end() -> None:
    buffer = SentenceBuffer()
    text = "word " * 2000
    assert all(buffer.push(character) == [] for character in text)
    assert buffer.flush() == [text.strip()]
