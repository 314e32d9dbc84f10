"""TextStream: tokens in, segments out as soon as each sentence is complete."""

from __future__ import annotations

import asyncio
import threading

from tests.fakes import fake_voicing
from voxserve.synthesis import paused_plan
from voxserve.synthesis.plan import PlanOptions
from voxserve.synthesis.text_stream import TextStream

PLAN = PlanOptions(max_chars=200, sentence_pause=0.2, clause_pause=0.05, small_first=True)
VOICING = fake_voicing()


def drain(stream: TextStream) -> list[str]:
    """Segments ready now, without waiting for more."""
    ready = []
    while not stream._segments.empty():
        segment = stream._segments.get_nowait()
        if segment is not None:
            ready.append(segment.text)
    return ready


def test_a_sentence_is_released_once_complete_and_only_the_first_fragment_is_small():
    stream = TextStream(VOICING, PLAN)
    for token in ["Sure", ",", " I", " can", " help", ".", " Dr", ".", " Smith", ","]:
        stream.push(token)
    assert drain(stream) == ["Sure,", "I can help."]  # "Dr." is not a sentence end
    stream.push(" the dentist, is in.")
    stream.end()
    assert drain(stream) == ["Doctor Smith, the dentist, is in."]  # normalized, not split


def test_the_opening_clause_goes_before_its_sentence_is_complete():
    stream = TextStream(VOICING, PLAN)
    for token in ["It", " costs", " 1,000", " dollars", ","]:
        stream.push(token)
        assert drain(stream) == []  # "1,000" is no clause mark; "dollars," may be a word's end
    stream.push(" more")
    assert drain(stream) == ["It costs one thousand dollars,"]
    stream.push(" or less, at 9:30 today. And then, more.")
    stream.end()
    # Only the opening clause goes early; the rest is planned by sentences as always.
    assert drain(stream) == ["more or less, at nine thirty today.", "And then, more."]


def test_fenced_code_is_not_read_even_when_the_fence_arrives_in_pieces():
    stream = TextStream(VOICING, PLAN)
    for token in ["Run this:", "\n`", "``py", "thon\nprint(", "1)\n`", "`", "`\nThen relax."]:
        stream.push(token)
    stream.end()
    assert drain(stream) == ["Run this:", "Then relax."]


def test_segments_ends_after_end_and_indices_run_on():
    stream = TextStream(VOICING, PLAN, normalize=False)

    async def collect() -> list[tuple[int, str]]:
        return [(segment.index, segment.text) async for segment in stream.segments()]

    async def main() -> list[tuple[int, str]]:
        task = asyncio.create_task(collect())
        stream.push("One. Two")
        stream.flush()
        stream.push(" 3.")
        stream.end()
        return await task

    assert asyncio.run(main()) == [(0, "One."), (1, "Two"), (2, "3.")]


def test_the_in_thread_forms_plan_off_the_loop_in_order(monkeypatch):
    planned_in: set[int] = set()
    real_normalize = paused_plan.normalize_for  # where TextStream's sentences are normalized

    def normalize(text: str, language: str) -> str:
        planned_in.add(threading.get_ident())
        return real_normalize(text, language)

    monkeypatch.setattr(paused_plan, "normalize_for", normalize)
    stream = TextStream(VOICING, PLAN)

    async def main() -> tuple[int, list[tuple[int, str]]]:
        collected = asyncio.create_task(_indexed(stream))
        await stream.push_in_thread("Sure, I can. It is 9:30")
        await stream.flush_in_thread()
        await stream.push_in_thread(" now. Dr. Smith is ")
        await stream.end_in_thread()
        return threading.get_ident(), await collected

    loop_thread, segments = asyncio.run(main())
    assert planned_in and loop_thread not in planned_in
    assert segments == [
        (0, "Sure,"), (1, "I can."), (2, "It is nine thirty"), (3, "now."), (4, "Doctor Smith is")
    ]  # fmt: skip


def test_close_drops_what_is_buffered_and_ends_segments():
    stream = TextStream(VOICING, PLAN, normalize=False)

    async def main() -> list[tuple[int, str]]:
        collected = asyncio.create_task(_indexed(stream))
        await stream.push_in_thread("Spoken. Never spoken")
        stream.close()
        await stream.end_in_thread()  # too late: nothing more is released
        return await collected

    assert asyncio.run(main()) == [(0, "Spoken.")]


async def _indexed(stream: TextStream) -> list[tuple[int, str]]:
    return [(segment.index, segment.text) async for segment in stream.segments()]


def test_text_is_normalized_for_the_voice_language():
    # The English normalizer reads "3" as "three": in a German sentence that is wrong, so text
    # for a voice of another language goes as written.
    english, german = TextStream(VOICING, PLAN), TextStream(fake_voicing("de-DE"), PLAN)
    for stream in (english, german):
        stream.push("Es sind 3 km.")
        stream.end()
    assert drain(english) == ["Es sind three kilometers."]
    assert drain(german) == ["Es sind drei km."]
