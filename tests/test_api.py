"""The library's file API (voxserve.api): from plain code, from code that runs an event loop
(a notebook, an async app), and its async variant; files appear whole or not at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fakes import FakeEngine, make_synthesizer, without_module
from voxserve.api import dialogue_to_file, synthesize_to_file, synthesize_to_file_async
from voxserve.audio import decode_audio
from voxserve.errors import EngineError, InvalidRequestError
from voxserve.request import DialogueRequest

TEXT = "Hello there. Written to a file."


async def _called_in_a_loop(*args, **kwargs) -> Path:
    # asyncio.run cannot start a loop here: the blocking call must bring its own.
    return synthesize_to_file(*args, **kwargs)


WAYS = {
    "plain code": synthesize_to_file,
    "inside an event loop": lambda *args, **kwargs: asyncio.run(_called_in_a_loop(*args, **kwargs)),
    "async variant": lambda *args, **kwargs: asyncio.run(synthesize_to_file_async(*args, **kwargs)),
}


@pytest.mark.parametrize("way", WAYS)
def test_speech_is_written_to_a_file(tmp_path: Path, way: str):
    path = WAYS[way](TEXT, tmp_path / "out.wav", synthesizer=make_synthesizer(FakeEngine()))
    audio = decode_audio(path.read_bytes())
    # The fake speaks 10 ms a character (TEXT has 31), plus the pause between the two sentences.
    assert audio.sample_rate == 16000 and audio.duration == pytest.approx(0.51, abs=0.05)


@pytest.mark.parametrize("way", WAYS)
def test_a_failure_raises_and_leaves_no_file(tmp_path: Path, way: str):
    synthesizer = make_synthesizer(FakeEngine(fail_on="Written"))
    with pytest.raises(EngineError, match="fake engine failure"):
        WAYS[way](TEXT, tmp_path / "out.wav", synthesizer=synthesizer)
    assert list(tmp_path.iterdir()) == []


async def test_a_dialogue_is_written_from_inside_an_event_loop(tmp_path: Path):
    request = DialogueRequest(
        turns=[{"speaker": "A", "text": "Hi."}, {"speaker": "B", "text": "Hello."}],
        voices={"A": "tone", "B": "low"},
    )
    path = tmp_path / "dialogue.flac"
    timings = dialogue_to_file(request, path, synthesizer=make_synthesizer(FakeEngine()))
    assert [(t.speaker, t.voice) for t in timings] == [("A", "tone"), ("B", "low")]
    assert decode_audio(path.read_bytes()).duration == pytest.approx(timings[-1].end, abs=0.05)


def test_timestamps_are_refused_for_an_engine_that_cannot_time_its_words(
    tmp_path: Path, monkeypatch
):
    without_module(monkeypatch, "pocketsphinx")  # else its words would be aligned
    synthesizer = make_synthesizer(FakeEngine())
    with pytest.raises(InvalidRequestError) as refused:
        synthesize_to_file(
            TEXT, tmp_path / "out.wav", synthesizer=synthesizer, timestamps=tmp_path / "out.json"
        )
    assert refused.value.param == "timestamps"
    assert list(tmp_path.iterdir()) == []  # refused before any audio was written
