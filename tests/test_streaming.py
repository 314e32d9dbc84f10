"""The edge every transport shares (voxserve.streaming): encoding with words, whole answers, SSE
events and the one mapping from exceptions to what a client is told."""

from __future__ import annotations

import base64
import io
import json
import logging
import subprocess
import sys
import wave
from collections.abc import AsyncIterator

import pytest

from tests.audio.signals import sine
from tests.conftest import logged_with_traceback
from voxserve.audio import decode_audio, decode_pcm16
from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.errors import EngineError, InvalidRequestError, OverloadedError
from voxserve.streaming import (
    SSE_DELTA_BYTES,
    Words,
    client_error,
    encode_chunks,
    encode_stream,
    encode_whole,
    sse_cut,
    sse_error,
    sse_piece,
    whole,
)

RATE = 16000
logger = logging.getLogger("tests.streaming")


def spoken(*words: tuple[str, float, float]) -> tuple[WordTiming, ...]:
    return tuple(WordTiming(text, start, end) for text, start, end in words)


def chunk(seconds: float, words: tuple[WordTiming, ...] = ()) -> AudioChunk:
    return AudioChunk(sine(220, seconds, RATE), RATE, words)


async def items(*things: object) -> AsyncIterator:
    for thing in things:
        yield thing


async def collect(pieces: AsyncIterator) -> list:
    return [piece async for piece in pieces]


async def test_each_chunks_words_come_just_before_its_audio_and_other_items_keep_their_place():
    hello, there = spoken(("hello", 0.0, 0.2)), spoken(("there", 0.25, 0.45))
    pieces = await collect(
        encode_stream(items(chunk(0.25, hello), "a timing", chunk(0.25, there)), "pcm", RATE)
    )
    kinds = [type(piece).__name__ for piece in pieces]
    assert kinds == ["Words", "bytes", "str", "Words", "bytes"]
    assert [pieces[0].words, pieces[3].words] == [hello, there]
    audio = b"".join(piece for piece in pieces if isinstance(piece, bytes))
    assert decode_pcm16(audio, RATE).duration == pytest.approx(0.5)


async def test_a_codec_that_holds_audio_back_still_gets_the_words_before_it():
    # mp3 gives nothing for a short chunk: its words go out at once, its audio comes later.
    words = spoken(("hi", 0.0, 0.01))
    chunks = [chunk(0.01, words), *(chunk(0.2) for _ in range(5))]
    pieces = await collect(encode_stream(items(*chunks), "mp3", RATE))
    assert isinstance(pieces[0], Words) and pieces[0].words == words
    assert all(isinstance(piece, bytes) for piece in pieces[1:])
    assert decode_audio(b"".join(pieces[1:])).duration >= 1.0


async def test_encode_chunks_gives_only_the_audio():
    chunks = items(chunk(0.1, spoken(("a", 0.0, 0.1))), chunk(0.1))
    parts = await collect(encode_chunks(chunks, "wav", RATE))
    assert all(isinstance(part, bytes) for part in parts)
    assert decode_audio(b"".join(parts)).duration == pytest.approx(0.2, abs=0.01)


async def test_a_whole_wav_gets_its_real_sizes_its_words_and_its_length():
    first, second = spoken(("one", 0.0, 0.3)), spoken(("two", 0.3, 0.5))
    encoded = await encode_whole(items(chunk(0.3, first), chunk(0.2, second)), "wav", RATE)
    with wave.open(io.BytesIO(encoded.audio)) as reader:
        assert reader.getnframes() == int(0.5 * RATE)
    assert encoded.words == first + second
    assert encoded.seconds == pytest.approx(0.5)


async def test_whole_fixes_the_wav_header_and_keeps_the_other_pieces_in_place():
    pieces = await whole(encode_stream(items(chunk(0.1), "turn", chunk(0.1)), "wav", RATE), "wav")
    assert pieces[1] == "turn"
    with wave.open(io.BytesIO(pieces[0] + pieces[2])) as reader:
        assert reader.getnframes() == int(0.2 * RATE)


def event(data: bytes) -> dict:
    assert data.startswith(b"data: ") and data.endswith(b"\n\n")
    return json.loads(data[len(b"data: ") :])


def test_sse_events_for_audio_words_and_the_callers_own():
    words = Words(spoken(("hello", 0.0, 0.25)))
    assert event(sse_piece(words)) == {
        "type": "speech.audio.words",
        "words": [{"word": "hello", "start": 0.0, "end": 0.25}],
    }
    delta = event(sse_piece(b"\x01\x02"))
    assert delta["type"] == "speech.audio.delta"
    assert base64.b64decode(delta["audio"]) == b"\x01\x02"
    assert event(sse_piece({"type": "dialogue.turn", "index": 0})) == {
        "type": "dialogue.turn",
        "index": 0,
    }
    parts = sse_cut(bytes(2 * SSE_DELTA_BYTES + 1))
    assert [len(part) for part in parts] == [SSE_DELTA_BYTES, SSE_DELTA_BYTES, 1]


def test_an_error_is_told_as_it_is_with_its_field_and_retry():
    told = client_error(InvalidRequestError("bad speed", param="speed"), logger, "testing")
    assert (told.status, told.type, told.code, told.param) == (
        400, "invalid_request_error", None, "speed",
    )  # fmt: skip
    assert told.ws_message("invalid_request") == {
        "type": "error", "code": "invalid_request", "message": "bad speed", "param": "speed",
    }  # fmt: skip
    busy = client_error(OverloadedError("busy", retry_after=3), logger, "testing")
    assert (busy.status, busy.code, busy.retry_after) == (429, "overloaded", 3)
    failed = client_error(EngineError("engine failed", code="engine_failed"), logger, "testing")
    assert event(sse_error(failed)) == {
        "type": "error",
        "error": {
            "message": "engine failed", "type": "engine_error", "param": None,
            "code": "engine_failed",
        },
    }  # fmt: skip


def test_a_bug_is_logged_with_its_traceback_and_told_as_an_internal_error(caplog):
    told = client_error(ZeroDivisionError("secret detail"), logger, "testing")
    assert (told.status, told.code) == (500, "internal_error")
    assert "secret detail" not in told.message and "testing" in told.message
    assert logged_with_traceback(caplog, ZeroDivisionError)


def test_the_library_path_does_not_load_the_web_framework():
    # The CLI and the library encode through this module: it must not pull in a server.
    code = "import sys, voxserve.streaming; print('fastapi' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False", loaded.stderr
