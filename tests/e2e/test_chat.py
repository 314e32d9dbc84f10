"""The voice chat over its WebSocket: real speech in, real transcription, a local LLM server that
speaks the OpenAI protocol, real speech out (protocol: docs/chat.md)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import struct
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import HTTPException
from websockets.sync.client import connect

from tests.conftest import free_port, logged_with_traceback, running
from tests.fakes import FakeEngine, FaultySynthesizer, fake_chat_llm, make_synthesizer
from voxserve.audio import StreamResampler, float_to_pcm16
from voxserve.chat.llm import OpenAICompatibleLLM
from voxserve.chat.local_llm import LocalLLM
from voxserve.chat.stt import Listener
from voxserve.config import ChatSettings, Settings
from voxserve.request import SpeechRequest
from voxserve.server.app import create_app
from voxserve.synthesis.synthesizer import Synthesizer

QUESTION = "What time does the library open tomorrow?"
LONG_REPLY = " ".join(f"This is sentence number {n} of a long story." for n in range(1, 12))


def reply_for(messages: list[dict]) -> str:
    asked = messages[-1]["content"].lower()
    return LONG_REPLY if "story" in asked else "The library opens at nine. It closes at six."


@pytest.fixture(scope="module")
def llm():
    app = fake_chat_llm(reply_for)
    with running(app) as url:
        yield url + "/v1", app


@pytest.fixture(scope="module")
def chat_url(llm, tmp_path_factory: pytest.TempPathFactory):
    url, _ = llm
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("chat"),
        chat=ChatSettings(llm_base_url=url, characters=[
            {"name": "Ava", "voice": "warm_female", "persona": "You are Ava."},
            {"name": "Max", "voice": "deep_male", "persona": "You are Max."},
        ]),
    )  # fmt: skip
    with running(create_app(synthesizer=Synthesizer(settings))) as http_url:
        yield http_url.replace("http://", "ws://") + "/v1/chat/ws"


def spoken(*parts: str, pause: float = 0.0, after: float = 1.0) -> list[bytes]:
    """``parts`` said by the embedded voice with ``pause`` seconds between them, as 16 kHz PCM in
    20 ms frames, with half a second of silence before and ``after`` seconds after."""
    synthesizer = Synthesizer(Settings())

    async def speak(text: str) -> np.ndarray:
        chunks = [c async for c in synthesizer.stream(SpeechRequest(input=text))]
        audio = np.concatenate([c.samples for c in chunks])
        return StreamResampler(chunks[0].sample_rate, 16000).process(audio, last=True)

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(round(16000 * seconds), np.float32)

    audio = [silence(0.5)]
    for number, part in enumerate(parts):
        audio += [silence(pause)] * bool(number) + [asyncio.run(speak(part))]
    pcm = float_to_pcm16(np.concatenate([*audio, silence(after)]))
    return [pcm[start : start + 640] for start in range(0, len(pcm), 640)]


@pytest.fixture(scope="module")
def question_frames() -> list[bytes]:
    """The spoken question at 16 kHz in 20 ms frames, with silence around it."""
    return spoken(QUESTION)


def chat_server(tmp_path: Path, llm_url: str, **chat: object):
    """A server whose chat uses the LLM at ``llm_url`` and the ``chat`` settings; yields the
    WebSocket URL."""
    settings = Settings(data_dir=tmp_path, chat=ChatSettings(llm_base_url=llm_url, **chat))
    return running(create_app(synthesizer=Synthesizer(settings)))


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/v1/chat/ws"


def send(ws, **message) -> None:
    ws.send(json.dumps(message))


def until(ws, kind: str, seen: list | None = None, timeout: float = 30) -> dict:
    """Messages up to the first of ``kind``; binary frames are kept in ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(message, bytes):
            if seen is not None:
                seen.append(message)
            continue
        data = json.loads(message)
        if seen is not None:
            seen.append(data)
        if data["type"] == kind:
            return data


def test_a_spoken_question_gets_a_spoken_answer_and_listening_resumes(chat_url, question_frames):
    with connect(chat_url) as ws:
        assert until(ws, "ready")["characters"][0]["name"] == "Ava"
        send(ws, type="start_listening")
        assert until(ws, "listening")["active"] is True
        for frame in question_frames:
            ws.send(frame)
            time.sleep(0.005)
        seen: list = []
        final = until(ws, "transcript_final", seen)
        assert "library" in final["text"].lower()
        start = until(ws, "audio_stream_start", seen)
        assert (start["character"], start["generation"], start["sample_rate"]) == ("Ava", 1, 22050)
        assert until(ws, "listening", seen)["active"] is False  # half-duplex
        stop = until(ws, "audio_stream_stop", seen)
        audio = [m for m in seen if isinstance(m, bytes)]
        assert audio and all(struct.unpack("<I", m[:4])[0] == 1 for m in audio)
        seconds = sum(len(m) - 4 for m in audio) / 2 / 22050
        assert 2.0 < seconds < 8.0
        # Piper's ~50 ms of near-silence before the first word is cut to a 10 ms fade-in.
        opening = np.frombuffer(b"".join(m[4:] for m in audio[:4]), "<i2")
        assert np.flatnonzero(np.abs(opening) > 32767 * 10 ** (-50 / 20))[0] <= 0.015 * 22050
        text = until(ws, "assistant_text")
        while not text["final"]:
            text = until(ws, "assistant_text")
        assert text["text"] == "The library opens at nine. It closes at six."
        metrics = until(ws, "metrics")
        assert metrics["total_to_first_audio"] > 0 and "llm_first_token" in metrics
        assert metrics["transcription"] > 0 and metrics["end_of_speech_detection"] > 0
        heard = metrics["end_of_speech_detection"] + metrics["transcription"]
        assert abs(heard - metrics["end_of_speech_to_final"]) <= 1  # each rounded to 1 ms
        send(ws, type="playback_finished", generation=stop["generation"], played_ms=4000)
        assert until(ws, "listening")["active"] is True  # resumed by itself


def test_an_interrupted_reply_keeps_only_what_was_heard(chat_url, llm):
    _, llm_app = llm
    with connect(chat_url) as ws:
        until(ws, "ready")
        send(ws, type="text", text="Max, tell me a long story.")
        start = until(ws, "audio_stream_start")
        assert start["character"] == "Max"  # addressed by name
        send(ws, type="interrupt", played_ms=100)
        assert until(ws, "tts_interrupt")["generation"] == start["generation"]
        send(ws, type="text", text="What did you just say?")
        until(ws, "audio_stream_start")
        history = " ".join(m["content"] for m in llm_app.state.requests[-1]["messages"])
        # Ava answers now (round robin) and sees Max's line by name, cut to what was heard.
        assert "Max: This is sentence number one of a long story." in history
        assert "sentence number two" not in history


def test_a_new_chat_loads_its_ears_and_voices_before_the_first_turn(tmp_path: Path, llm):
    url, _ = llm
    chat = ChatSettings(llm_base_url=url)
    synthesizer = Synthesizer(Settings(data_dir=tmp_path, preload=False, chat=chat))
    with running(create_app(synthesizer=synthesizer)) as http_url:
        transcriber = synthesizer.resolver.transcriber
        assert not transcriber.loaded and not synthesizer.registry.loaded_names()
        with connect(ws_url(http_url)) as ws:
            until(ws, "ready")
            deadline = time.monotonic() + 60
            while not (transcriber.loaded and synthesizer.registry.is_loaded("piper")):
                assert time.monotonic() < deadline, "the chat did not warm up"
                time.sleep(0.05)


def test_an_unreachable_llm_is_a_clear_message_and_the_chat_goes_on(tmp_path: Path):
    with chat_server(tmp_path, f"http://127.0.0.1:{free_port()}/v1") as url:
        with connect(ws_url(url)) as ws:
            until(ws, "ready")
            send(ws, type="start_listening")
            until(ws, "listening")
            send(ws, type="text", text="Hello?")
            error = until(ws, "error")
            assert error["code"] == "llm_unreachable" and "not reachable" in error["message"]
            ws.send(b"\x01")  # a broken frame: an error, not a crash
            assert until(ws, "error")["code"] == "invalid_message"
            ws.send(np.full(320, 0.25, "<f4").tobytes())  # the wrong sample format
            error = until(ws, "error")
            assert error["code"] == "invalid_message" and "32-bit float" in error["message"]
            send(ws, type="dance")
            assert until(ws, "error")["code"] == "unknown_type"
            send(ws, type="reset")
            assert until(ws, "ready")["type"] == "ready"


def test_speaking_over_the_assistant_interrupts_it(chat_url, question_frames):
    with connect(chat_url) as ws:
        until(ws, "ready")
        send(ws, type="text", text="Ava, tell me a long story.")
        start = until(ws, "audio_stream_start")
        seen: list = []
        for frame in question_frames:  # the user talks over the reply
            ws.send(frame)
            time.sleep(0.01)
        interrupted = until(ws, "tts_interrupt", seen)
        assert interrupted["generation"] == start["generation"]
        final = until(ws, "transcript_final", seen)  # the interruption is the user's next turn
        assert "library" in final["text"].lower()


def test_two_clients_at_once_hear_only_their_own_answers(chat_url):
    results: dict[str, list] = {}

    def client(question: str) -> None:
        with connect(chat_url) as ws:
            until(ws, "ready")
            send(ws, type="text", text=question)
            seen: list = []
            until(ws, "audio_stream_stop", seen)
            text = until(ws, "assistant_text")
            while not text["final"]:
                text = until(ws, "assistant_text")
            results[question] = [seen, text["text"]]

    questions = ["Ava, when does the library open?", "Max, tell me a long story."]
    threads = [threading.Thread(target=client, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    library, story = (results[q] for q in questions)
    assert library[1] == "The library opens at nine. It closes at six."
    assert story[1] == LONG_REPLY
    for seen, _ in (library, story):
        said = " ".join(
            m["text"] for m in seen if isinstance(m, dict) and m["type"] == "assistant_text"
        )
        frames = [m for m in seen if isinstance(m, bytes)]
        assert frames and {struct.unpack("<I", f[:4])[0] for f in frames} == {1}
        assert ("story" in said) == (seen is story[0])  # no sentence of the other's answer


def test_a_slow_llm_is_a_clear_message_and_the_chat_goes_on(tmp_path: Path):
    slow = fake_chat_llm(lambda messages: "Finally, an answer.", delay=3.0)
    with (
        running(slow) as llm_url,
        chat_server(tmp_path, llm_url + "/v1", llm_first_token_timeout=0.5) as url,
    ):
        with connect(ws_url(url)) as ws:
            until(ws, "ready")
            send(ws, type="start_listening")
            until(ws, "listening")
            send(ws, type="text", text="Hello?")
            error = until(ws, "error", timeout=5)
            assert error["code"] == "llm_timeout" and "first_token_timeout" in error["message"]
            send(ws, type="text", text="Are you there?")  # a second try gets the same message
            assert until(ws, "error", timeout=5)["code"] == "llm_timeout"


def test_a_failing_transcription_is_a_clear_message_and_the_chat_goes_on(
    tmp_path: Path, llm, question_frames
):
    broken = tmp_path / "whisper"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"not a model")
    settings = Settings(
        data_dir=tmp_path,
        stt={"model_path": str(broken)},
        chat=ChatSettings(llm_base_url=llm[0]),
    )
    with running(create_app(synthesizer=Synthesizer(settings))) as url:
        with connect(ws_url(url)) as ws:
            until(ws, "ready")
            send(ws, type="start_listening")
            until(ws, "listening")
            for frame in question_frames:
                ws.send(frame)
            error = until(ws, "error")
            assert error["code"] == "stt_model_missing"
            assert "could not load the Whisper model" in error["message"]
            send(ws, type="text", text="When does the library open?")  # typing still works
            assert until(ws, "audio_stream_start")["character"] == "Ava"


def test_a_reply_started_in_a_pause_is_dropped_when_the_user_speaks_on(tmp_path: Path, llm):
    """The reply starts on the transcript heard in a pause; the user goes on, so it is cancelled
    unseen, and the whole question is answered instead."""
    llm_url, llm_app = llm
    frames = spoken("What time does the library", "open tomorrow?", pause=0.8, after=1.8)
    asked_before = len(llm_app.state.requests)
    with chat_server(tmp_path, llm_url, end_of_speech_ms=1500) as url:
        with connect(ws_url(url)) as ws:
            until(ws, "ready")
            send(ws, type="start_listening")
            until(ws, "listening")
            for frame in frames:  # in real time: the pause must be heard as one
                ws.send(frame)
                time.sleep(0.02)
            seen: list = []
            final = until(ws, "transcript_final", seen)
            assert "tomorrow" in final["text"].lower()
            until(ws, "audio_stream_stop", seen)
            until(ws, "metrics", seen)

    asked = [r["messages"] for r in llm_app.state.requests[asked_before:]]
    assert len(asked) == 2, asked  # the reply begun in the pause, then the real one
    assert "tomorrow" not in asked[0][-1]["content"].lower()
    assert asked[1][-1]["content"] == final["text"]
    assert [m["role"] for m in asked[1]] == ["system", "user"]  # the pause left no turn behind
    generations = {m["generation"] for m in seen if isinstance(m, dict) and "generation" in m}
    generations |= {struct.unpack("<I", m[:4])[0] for m in seen if isinstance(m, bytes)}
    assert generations == {2}  # nothing of the dropped reply reached the client


def test_a_conversation_is_saved_listed_and_resumed(tmp_path: Path, llm):
    llm_url, llm_app = llm
    with chat_server(tmp_path, llm_url) as url:
        with connect(ws_url(url)) as ws:
            conversation_id = until(ws, "ready")["conversation_id"]
            send(ws, type="text", text="When does the library open?")
            until(ws, "metrics")  # the turn is over

    with chat_server(tmp_path, llm_url) as url:  # a restarted server
        listed = httpx.get(url + "/v1/chat/conversations").json()["data"]
        assert [(c["id"], c["title"], c["turns"]) for c in listed] == [
            (conversation_id, "When does the library open?", 2)
        ]
        saved = httpx.get(f"{url}/v1/chat/conversations/{conversation_id}").json()
        assert saved["turns"][1] == {
            "speaker": "Ava", "text": "The library opens at nine. It closes at six."
        }  # fmt: skip

        with connect(ws_url(url)) as ws:
            assert until(ws, "ready")["history"] == []  # a new conversation by default
            send(ws, type="resume", conversation_id=conversation_id)
            resumed = until(ws, "ready")
            assert resumed["conversation_id"] == conversation_id
            assert resumed["history"] == saved["turns"]
            send(ws, type="text", text="And when does it close?")
            until(ws, "metrics")
            asked = llm_app.state.requests[-1]["messages"]
            assert [m["content"] for m in asked[1:]] == [
                "When does the library open?",
                "The library opens at nine. It closes at six.",
                "And when does it close?",
            ]
            send(ws, type="resume", conversation_id="0" * 32)
            assert until(ws, "error")["code"] == "conversation_not_found"

        assert (
            httpx.get(f"{url}/v1/chat/conversations/{conversation_id}").json()["turns"][3][
                "speaker"
            ]
            == "Ava"
        )
        assert httpx.delete(f"{url}/v1/chat/conversations/{conversation_id}").json()["deleted"]
        missing = httpx.get(f"{url}/v1/chat/conversations/{conversation_id}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "conversation_not_found"
        bad = httpx.get(url + "/v1/chat/conversations/nope")
        assert bad.status_code == 400 and "not a conversation id" in bad.json()["error"]["message"]


def test_a_client_that_vanishes_mid_turn_has_all_its_work_cancelled(tmp_path: Path):
    slow = fake_chat_llm(lambda messages: LONG_REPLY, delay=0.1)  # about 10 s of words
    with running(slow) as llm_url:
        settings = Settings(data_dir=tmp_path, chat=ChatSettings(llm_base_url=llm_url + "/v1"))
        synthesizer = Synthesizer(settings)
        with running(create_app(synthesizer=synthesizer)) as url:
            with connect(ws_url(url)) as ws:
                until(ws, "ready")
                send(ws, type="text", text="Tell me a long story.")
                until(ws, "audio_stream_start")
            # Gone mid-reply: the LLM stream is dropped and the synthesis stops.
            deadline = time.monotonic() + 10
            while (not slow.state.streamed or synthesizer.stats.active) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            assert slow.state.streamed == [False]
            assert synthesizer.stats.active == 0


def test_with_history_off_nothing_is_listed_or_resumed(tmp_path: Path, llm):
    with chat_server(tmp_path, llm[0], keep_history=False) as url:
        listed = httpx.get(url + "/v1/chat/conversations")
        assert listed.status_code == 400
        assert listed.json()["error"]["code"] == "history_disabled"
        with connect(ws_url(url)) as ws:
            until(ws, "ready")
            send(ws, type="resume", conversation_id="0" * 32)
            assert until(ws, "error")["code"] == "history_disabled"


def next_of(ws, kinds: tuple[str, ...], timeout: float = 60) -> dict:
    """The next message of one of ``kinds``."""
    deadline = time.monotonic() + timeout
    while True:
        message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(message, str) and (data := json.loads(message))["type"] in kinds:
            return data


def crash_mid_reply(ws, llm: LocalLLM) -> tuple[int, dict]:
    """Kill the embedded LLM's process while it writes a long reply; returns its id and the
    message the turn ended with. A reply can end before the kill lands: then the next turn,
    which starts a new process, is tried."""
    for _ in range(3):
        send(ws, type="text", text="Tell me a long story about a dragon and a knight.")
        next_of(ws, ("assistant_text",))  # its first sentence is spoken; the LLM writes on
        crashed = llm.process_id
        os.kill(crashed, signal.SIGKILL)
        ending = next_of(ws, ("error", "metrics"))
        if ending["type"] == "error":
            break
    return crashed, ending


def test_the_embedded_llm_crashing_costs_only_the_reply_it_was_writing(tmp_path: Path):
    # One thread, and room for a long story: the kill lands while the reply is being written.
    chat = ChatSettings(llm_threads=1, max_reply_tokens=1000)
    app = create_app(synthesizer=Synthesizer(Settings(data_dir=tmp_path, chat=chat)))
    with running(app) as url, connect(ws_url(url)) as ws:
        until(ws, "ready")
        llm = app.state.chat_llm
        assert isinstance(llm, LocalLLM)  # no llm_base_url: the embedded one

        crashed, ending = crash_mid_reply(ws, llm)
        speech = httpx.post(
            url + "/v1/audio/speech", json={"input": "Still here.", "voice": "joe"}, timeout=60
        )  # another client, right after the crash
        assert ending["type"] == "error" and ending["code"] == "llm_error"
        assert "died (signal 9, SIGKILL)" in ending["message"]
        assert speech.status_code == 200 and speech.headers["content-type"] == "audio/mpeg"
        assert len(speech.content) > 1000

        send(ws, type="text", text="What is the capital of France?")  # the same connection
        until(ws, "audio_stream_start")
        text = next_of(ws, ("assistant_text",))
        while not text["final"]:
            text = next_of(ws, ("assistant_text",))
        words = re.findall(r"[a-z']+", text["text"].lower())
        assert len(words) >= 3 and {"the", "a", "is", "of", "paris"} & set(words), text
        assert llm.process_id not in (None, crashed)


def test_a_bug_mid_reply_is_an_internal_error_and_the_chat_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    def reply(messages: list[dict]) -> str:  # FaultySynthesizer fails after saying "boom"
        return "It goes boom here. Never heard." if "break" in messages[-1]["content"] else "Fine."

    with running(fake_chat_llm(reply)) as llm_url:
        chat = ChatSettings(
            llm_base_url=llm_url + "/v1",
            characters=[{"name": "Ava", "voice": "tone", "persona": "You are Ava."}],
        )
        synthesizer = make_synthesizer(
            FakeEngine(), FaultySynthesizer, data_dir=tmp_path, chat=chat
        )
        with running(create_app(synthesizer=synthesizer)) as url, connect(ws_url(url)) as ws:
            until(ws, "ready")
            send(ws, type="text", text="Please break.")
            until(ws, "audio_stream_start")  # mid-reply
            error = until(ws, "error")
            assert error["code"] == "internal_error"
            assert "see the server's log" in error["message"]
            send(ws, type="text", text="And now?")
            seen: list = []
            start = until(ws, "audio_stream_start", seen)
            stop = until(ws, "audio_stream_stop", seen)
            assert start["generation"] == stop["generation"] == 2
            assert [m for m in seen if isinstance(m, bytes)]
    assert logged_with_traceback(caplog, RuntimeError)


# --- a chat costs nothing until used; bad input fails alone -------------------------------


def fake_chat(tmp_path: Path, llm_url: str, engine: FakeEngine | None = None, **chat: object):
    """A chat server of the fake engine, Ava speaking its tone; yields its URL."""
    settings = ChatSettings(
        llm_base_url=llm_url,
        characters=[{"name": "Ava", "voice": "tone", "persona": "You are Ava."}],
        **chat,
    )
    synthesizer = make_synthesizer(engine or FakeEngine(), data_dir=tmp_path, preload=False,
                                   chat=settings)  # fmt: skip
    return running(create_app(synthesizer=synthesizer))


@pytest.fixture
def warm_ups(monkeypatch: pytest.MonkeyPatch) -> collections.Counter:
    """How often Whisper and the LLM were warmed (neither really is: the count is the point)."""
    warmed: collections.Counter = collections.Counter()

    def hear_silence(self) -> None:
        warmed["whisper"] += 1

    async def read_persona(self, messages: list[dict]) -> None:
        warmed["llm"] += 1

    monkeypatch.setattr(Listener, "warm_up", hear_silence)
    monkeypatch.setattr(OpenAICompatibleLLM, "warm_up", read_persona)
    return warmed


def test_the_models_are_warmed_once_for_every_connection(tmp_path: Path, llm, warm_ups):
    engine = FakeEngine()
    with fake_chat(tmp_path, llm[0], engine) as url:
        with contextlib.ExitStack() as stack:
            sockets = [stack.enter_context(connect(ws_url(url))) for _ in range(5)]
            for ws in sockets:
                until(ws, "ready")
                send(ws, type="start_listening")
                until(ws, "listening")
            send(sockets[-1], type="text", text="When does the library open?")
            until(sockets[-1], "metrics")
            assert warm_ups == {"whisper": 1, "llm": 1}
            assert engine.loads == 1


def test_with_chat_preload_the_server_warms_the_chat_as_it_starts(tmp_path: Path, llm, warm_ups):
    with fake_chat(tmp_path, llm[0], preload=True) as url:
        deadline = time.monotonic() + 30
        while warm_ups != {"whisper": 1, "llm": 1}:
            assert time.monotonic() < deadline, "the chat was not warmed"
            time.sleep(0.05)
        with connect(ws_url(url)) as ws:
            until(ws, "ready")
            send(ws, type="text", text="When does the library open?")
            until(ws, "metrics")
        assert warm_ups == {"whisper": 1, "llm": 1}


def test_a_typed_message_that_cannot_be_taken_fails_alone(tmp_path: Path, llm):
    llm_url, llm_app = llm
    with fake_chat(tmp_path, llm_url) as url, connect(ws_url(url)) as ws:
        until(ws, "ready")
        ws.send('{"type": "text", "text": "\\ud800"}')  # a lone surrogate: no UTF-8, no text
        error = until(ws, "error")
        assert (error["code"], error["param"]) == ("invalid_message", "text")
        send(ws, type="text", text="x" * 200_000)
        error = until(ws, "error")
        assert error["param"] == "text" and "at most 4000 characters" in error["message"]
        ws.send('{"type": "text", "text": "And this?\\u0000"}')  # no database keeps a NUL
        assert until(ws, "error")["param"] == "text"
        send(ws, type="interrupt", played_ms="soon")
        assert until(ws, "error")["param"] == "played_ms"

        send(ws, type="text", text="When does the library open?")
        until(ws, "metrics")
        asked = llm_app.state.requests[-1]["messages"]
        assert [m["content"] for m in asked[1:]] == ["When does the library open?"]


def test_a_turn_that_fails_leaves_no_trace_and_the_next_one_works(tmp_path: Path):
    def reply(messages: list[dict]) -> str:
        if "fail" in messages[-1]["content"]:  # an answer, not a crash: the connection goes on
            raise HTTPException(503, "the LLM is down")
        return "Fine."

    failing = fake_chat_llm(reply)
    with running(failing) as llm_url, fake_chat(tmp_path, llm_url + "/v1") as url:
        with connect(ws_url(url)) as ws:
            conversation_id = until(ws, "ready")["conversation_id"]
            send(ws, type="text", text="Hello.")
            until(ws, "metrics")
            send(ws, type="text", text="Please fail.")
            assert until(ws, "error")["code"].startswith("llm_")
            send(ws, type="text", text="And now?")
            until(ws, "metrics")
        asked = failing.state.requests[-1]["messages"]
        assert [m["content"] for m in asked[1:]] == ["Hello.", "Fine.", "And now?"]
        # Turns are saved in the background: the last one may land just after the socket closed
        expected = ["Hello.", "Fine.", "And now?", "Fine."]
        deadline = time.monotonic() + 10
        while True:
            saved = httpx.get(f"{url}/v1/chat/conversations/{conversation_id}").json()
            texts = [t["text"] for t in saved["turns"]]
            if texts == expected or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert texts == expected


def test_characters_that_cannot_be_used_are_refused_and_the_chat_goes_on(tmp_path: Path, llm):
    def character(**fields: object) -> dict:
        return {"name": "Bo", "voice": "tone", "persona": "You are Bo.", **fields}

    with fake_chat(tmp_path, llm[0]) as url:
        with connect(ws_url(url)) as ws:
            conversation_id = until(ws, "ready")["conversation_id"]
            refused = {
                "characters.0.name": [character(name=5)],
                "characters.0.persona": [character(persona="p" * 200_000)],
                "characters.0.voice": [character(voice="no-such-voice")],
                "characters.1.name": [character(), character(name="user")],
                "characters": [character(), character()],  # two of one name
            }
            for param, characters in refused.items():
                send(ws, type="set_characters", characters=characters)
                error = until(ws, "error")
                assert error["param"] == param, error
            send(ws, type="set_characters", characters=[character()], policy="sometimes")
            assert until(ws, "error")["param"] == "policy"

            send(ws, type="text", text="Hello?")
            assert until(ws, "audio_stream_start")["character"] == "Ava"
            until(ws, "metrics")
            send(ws, type="reset")
            assert [c["name"] for c in until(ws, "ready")["characters"]] == ["Ava"]
            send(ws, type="resume", conversation_id=conversation_id)
            assert [c["name"] for c in until(ws, "ready")["characters"]] == ["Ava"]
            send(ws, type="text", text="Still there?")
            assert until(ws, "audio_stream_start")["character"] == "Ava"


def test_listing_conversations_past_any_offset_is_a_400(tmp_path: Path, llm):
    with fake_chat(tmp_path, llm[0]) as url:
        listed = httpx.get(url + "/v1/chat/conversations", params={"offset": 2**63})
        assert listed.status_code == 400
        assert listed.json()["error"]["param"] == "offset"
        too_many = httpx.get(url + "/v1/chat/conversations", params={"limit": 10**30})
        assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "limit"
