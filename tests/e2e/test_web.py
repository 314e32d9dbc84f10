"""The browser pages in headless Chromium: they load cleanly, their worklets run, and the chat page
speaks docs/chat.md to a scripted stand-in for the chat server.

The pages are served as static files by a tiny app with a ``/v1/audio/voices`` route and a
scripted ``/v1/chat/ws`` (the real chat routes live elsewhere). Skipped when Playwright or Chromium
is missing.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright import sync_api as playwright_sync
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.conftest import running

CHROMIUM = Path("/usr/bin/chromium")
WEB = Path(__file__).resolve().parents[2] / "voxserve" / "web"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip
VOICES = {
    "voices": [
        {
            "id": "joe",
            "object": "voice",
            "type": "builtin",
            "name": "joe",
            "description": "US male",
        },
        {"id": "warm_female", "object": "voice", "type": "builtin", "name": "warm_female"},
    ],
    "aliases": {"nova": "warm_female"},
}
RATE = 22050
MODELS = {
    "object": "list",
    "data": [
        {"id": "piper", "object": "model", "installed": True, "loaded": True,
         "capabilities": {"sample_rate": RATE, "languages": ["en-US"], "speed_range": [0.25, 4.0],
                          "cloning": False, "instructions": False, "sampling": False}},
    ],
}  # fmt: skip



def tone(seconds: float) -> bytes:
    count = int(RATE * seconds)
    return struct.pack(
        f"<{count}h", *(int(8000 * math.sin(i * 2 * math.pi * 440 / RATE)) for i in range(count))
    )


async def send_reply(websocket: WebSocket, generation: int, seconds: float) -> None:
    """One reply as the chat server sends it: text, then paced audio frames of 40 ms."""
    await websocket.send_json(
        {
            "type": "assistant_text",
            "character": "Ava",
            "text": "A tone.",
            "generation": generation,
            "final": True,
        }
    )
    await websocket.send_json(
        {
            "type": "audio_stream_start",
            "sample_rate": RATE,
            "character": "Ava",
            "generation": generation,
        }
    )
    await websocket.send_json({"type": "listening", "active": False})
    pcm = tone(seconds)
    frame = int(RATE * 0.04) * 2
    for offset in range(0, len(pcm), frame):
        await websocket.send_bytes(struct.pack("<I", generation) + pcm[offset : offset + frame])
        await asyncio.sleep(0.01)  # faster than real time, like the server
    await websocket.send_json({"type": "audio_stream_stop", "generation": generation})
    timings = {"end_of_speech_to_final": 120, "llm_first_token": 200, "llm_first_sentence": 300}
    timings |= {"tts_first_audio": 90, "total_to_first_audio": 410}
    await websocket.send_json({"type": "metrics", "generation": generation, **timings})


def static_app(received: list) -> Starlette:
    """The web directory at / and /chat, fake voices, and a scripted chat WebSocket."""

    async def voices(request):
        return JSONResponse(VOICES)

    async def empty_list(request):  # no saved conversations, no jobs
        return JSONResponse({"object": "list", "data": []})

    async def models(request):
        return JSONResponse(MODELS)

    async def access(request):
        return JSONResponse({"required": False, "authorized": True, "scope": None})

    async def chat_page(request):
        return FileResponse(WEB / "chat.html")

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        ready = {"type": "ready", "characters": [], "barge_in": True, "input_sample_rate": 16000}
        await websocket.send_json(ready)
        generation = 0
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    received.append({"type": "binary", "size": len(message["bytes"])})
                    continue
                data = json.loads(message["text"])
                received.append(data)
                if data["type"] == "start_listening":
                    await websocket.send_json({"type": "listening", "active": True})
                elif data["type"] == "set_characters":
                    ready = {"type": "ready", "characters": data["characters"], "barge_in": True}
                    await websocket.send_json(ready | {"input_sample_rate": 16000})
                elif data["type"] == "text":
                    generation += 1
                    seconds = 8.0 if "long" in data["text"] else 0.5
                    await websocket.send_json(
                        {"type": "error", "code": "test_error", "message": "a harmless error"}
                    )
                    await send_reply(websocket, generation, seconds)
                elif data["type"] == "interrupt":
                    await websocket.send_json({"type": "tts_interrupt", "generation": generation})
                    # Stale frames after the interruption: the page must drop them.
                    await websocket.send_bytes(struct.pack("<I", generation) + tone(0.2))
        except WebSocketDisconnect:
            return

    return Starlette(
        routes=[
            Route("/v1/audio/voices", voices),
            Route("/v1/models", models),
            Route("/v1/chat/conversations", empty_list),
            Route("/v1/jobs", empty_list),
            Route("/v1/auth", access),
            Route("/chat", chat_page),
            WebSocketRoute("/v1/chat/ws", chat),
            Mount("/", StaticFiles(directory=WEB, html=True)),
        ]
    )


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[str, list]]:
    received: list = []
    with running(static_app(received)) as url:
        yield url, received


@pytest.fixture
def site_fresh(site) -> tuple[str, list]:
    site[1].clear()  # messages of the previous test's page
    return site


@pytest.fixture(scope="module")
def playwright():
    with playwright_sync.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright):
    # Not skipped without it: a browser test that silently does not run hides a broken page.
    assert CHROMIUM.exists(), "the browser tests need Debian's chromium: apt-get install chromium"
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(permissions=["microphone"])
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    yield page
    context.close()


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def of_type(received: list, kind: str) -> list[dict]:
    return [message for message in received if message["type"] == kind]


def test_playground_loads_voices(site_fresh, page) -> None:
    url, _ = site_fresh
    page.goto(url + "/")
    ready = page.evaluate("window.voxserveReady")
    assert ready["voices"] == 3  # two voices and one alias
    assert page.locator("#voice option").first.get_attribute("value") == "joe"
    assert page.locator("a[href='/chat']").count() == 1
    page.screenshot(path="/tmp/voxserve-playground.png", full_page=True)
    assert page.errors == []


def test_chat_page_loads_worklets_and_characters(site_fresh, page) -> None:
    url, received = site_fresh
    page.goto(url + "/chat")
    audio = page.evaluate("window.voxserveReady")  # both addModule calls succeeded
    assert audio["sampleRate"] > 0
    page.wait_for_selector("#connection[data-state=open]")
    page.wait_for_function("document.querySelector('.character select').options.length === 2")

    page.fill(".character [name=name]", "Ben")
    page.select_option(".character [name=voice]", "warm_female")
    page.fill(".character [name=persona]", "You are Ben.")
    page.click("#characters-form button[type=submit]")
    sent = wait_for(lambda: of_type(received, "set_characters"))
    ben = {"name": "Ben", "voice": "warm_female", "persona": "You are Ben.", "description": ""}
    assert sent[-1]["characters"][0] == ben
    assert sent[-1]["policy"] == "round_robin"
    assert page.errors == []


def test_microphone_frames_go_up_as_16khz_pcm(site_fresh, page) -> None:
    url, received = site_fresh
    page.goto(url + "/chat")
    page.evaluate("window.voxserveReady")
    page.wait_for_selector("#connection[data-state=open]")
    page.click("#voice-button")
    wait_for(lambda: of_type(received, "start_listening"))
    page.wait_for_selector("#state[data-state=listening]")
    frames = wait_for(
        lambda: len(of_type(received, "binary")) >= 10 and of_type(received, "binary")
    )
    assert {frame["size"] for frame in frames} == {640}  # 320 samples of 16-bit: 20 ms at 16 kHz
    page.click("#voice-button")
    wait_for(lambda: of_type(received, "stop_listening"))
    assert page.errors == []


def test_reply_plays_and_reports_playback(site_fresh, page) -> None:
    url, received = site_fresh
    page.goto(url + "/chat")
    page.evaluate("window.voxserveReady")
    page.wait_for_selector("#connection[data-state=open]")
    page.fill("#text-input", "hello")
    page.press("#text-input", "Enter")

    wait_for(lambda: any(m.get("generation") == 1 for m in of_type(received, "playback_started")))
    finished = wait_for(
        lambda: [m for m in of_type(received, "playback_finished") if m["generation"] == 1]
    )
    assert 400 <= finished[0]["played_ms"] <= 600  # 0.5 s of audio, resampled to the context rate
    page.wait_for_selector("#log li.assistant:has-text('A tone.')")
    page.wait_for_selector("#errors li:has-text('a harmless error')")
    page.wait_for_function("document.querySelector('#metrics td[data-key=heard]').textContent")
    assert page.locator("#metrics td[data-key=total_to_first_audio]").first.text_content() == "410"
    page.screenshot(path="/tmp/voxserve-chat.png", full_page=True)
    assert page.errors == []


def test_stop_flushes_and_reports_what_was_heard(site_fresh, page) -> None:
    url, received = site_fresh
    page.goto(url + "/chat")
    page.evaluate("window.voxserveReady")
    page.wait_for_selector("#connection[data-state=open]")
    page.fill("#text-input", "a long one")
    page.press("#text-input", "Enter")
    wait_for(lambda: of_type(received, "playback_started"))
    page.wait_for_selector("#state[data-state=speaking]")
    time.sleep(0.5)
    page.click("#stop-button")
    wait_for(lambda: of_type(received, "interrupt"))
    finished = wait_for(lambda: of_type(received, "playback_finished"))
    assert 200 <= finished[0]["played_ms"] < 3000  # cut: nowhere near the 8 s sent
    page.wait_for_selector("#log li.assistant.interrupted")
    time.sleep(0.5)  # the stale frames sent after the interruption must not restart playback
    assert len(of_type(received, "playback_finished")) == 1
    assert page.locator("#state").get_attribute("data-state") != "speaking"
    assert page.errors == []


# ---- the real chat server, with a spoken question as the microphone ---------------------------

QUESTION = "What time does the library open tomorrow?"


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The question in the embedded voice, with silence around it, as Chromium's microphone."""
    from voxserve.api import synthesize_to_file
    from voxserve.request import SpeechRequest

    path = tmp_path_factory.mktemp("microphone") / "question.wav"
    spoken = path.with_name("spoken.wav")
    # Playwright's sync API keeps an event loop running here: synthesize_to_file works anyway.
    synthesize_to_file(SpeechRequest(input=QUESTION), spoken)
    with wave.open(str(spoken)) as source, wave.open(str(path), "wb") as target:
        target.setparams(source.getparams())
        pad = bytes(2 * source.getframerate())  # 1 s of silence
        target.writeframes(pad + source.readframes(source.getnframes()) + 3 * pad)
    return path


def serve_with_chat(data_dir: Path, **settings) -> Iterator[str]:
    """The real server, its chat answered by an OpenAI-compatible LLM server on loopback."""
    from tests.fakes import fake_chat_llm
    from voxserve.config import ChatSettings, Settings
    from voxserve.server.app import create_app
    from voxserve.synthesis.synthesizer import Synthesizer

    with running(fake_chat_llm(lambda messages: "It opens at nine in the morning.")) as llm:
        chat = ChatSettings(llm_base_url=llm + "/v1")
        settings = Settings(data_dir=data_dir, chat=chat, **settings)
        with running(create_app(synthesizer=Synthesizer(settings))) as url:
            yield url


@pytest.fixture(scope="module")
def real_chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve_with_chat(tmp_path_factory.mktemp("web-chat"))


def test_a_spoken_question_is_heard_and_answered_aloud(
    real_chat, question_wav, playwright
) -> None:
    """Chromium's microphone plays the question into the real /chat page and server: the page
    shows the transcript, then plays the answer and measures its latency."""
    args = [*LAUNCH_ARGS, f"--use-file-for-fake-audio-capture={question_wav}%noloop"]
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
    try:
        page = browser.new_context(permissions=["microphone"]).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(real_chat + "/chat")
        page.evaluate("window.voxserveReady")
        page.wait_for_selector("#connection[data-state=open]")
        page.click("#voice-button")
        heard = page.wait_for_selector("#log li.user", timeout=30_000)
        assert "library" in heard.text_content().lower()
        page.wait_for_selector("#log li.assistant:has-text('It opens at nine')")
        # The latency cell fills in when the answer's first sample is heard.
        page.wait_for_function(
            "document.querySelector('#metrics td[data-key=heard]')?.textContent",
            timeout=30_000,
        )
        page.wait_for_selector("#state[data-state=listening]", timeout=30_000)  # resumed
        page.screenshot(path="/tmp/voxserve-chat-spoken.png", full_page=True)
        assert errors == []
    finally:
        browser.close()


def test_a_conversation_comes_back_after_a_reload(real_chat, browser) -> None:
    page = browser.new_context().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(real_chat + "/chat")
    page.wait_for_selector("#connection[data-state=open]")
    page.fill("#text-input", "When does the library open?")
    page.press("#text-input", "Enter")
    page.wait_for_selector("#log li.assistant:has-text('It opens at nine')")
    page.wait_for_function("location.hash.startsWith('#conversation=')")  # saved
    conversation = page.evaluate("location.hash").split("=")[1]

    page.reload()
    page.wait_for_selector("#log li.user:has-text('When does the library open?')")
    page.wait_for_selector("#log li.assistant:has-text('It opens at nine')")
    page.wait_for_function(f"document.querySelector('#conversations').value === '{conversation}'")
    page.select_option("#conversations", "")  # a new conversation
    page.wait_for_function("document.querySelectorAll('#log li').length === 0")
    assert page.evaluate("location.hash") == ""
    assert errors == []


@pytest.fixture(scope="module")
def keyed_chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server with an API key."""
    yield from serve_with_chat(tmp_path_factory.mktemp("web-keyed"), auth={"api_keys": [PAGE_KEY]})


PAGE_KEY = "page-key-0123456789"


def test_the_pages_ask_for_a_key_and_use_it_everywhere(keyed_chat, browser) -> None:
    """On a server with keys, each page asks once (a wrong key is asked for again), then speaks,
    lists voices and chats with it: over fetch and over the chat's WebSocket."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    answers = iter(["wrong-key-000000000", PAGE_KEY])
    asked: list[str] = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept(next(answers))

    page.on("dialog", answer)
    page.goto(keyed_chat + "/")
    assert page.evaluate("window.voxserveReady")["voices"] > 5
    assert asked == ["This server needs an API key:", "The server refused this API key. API key:"]
    page.fill("#input", "Hello with a key.")
    page.click("#speak")
    page.wait_for_selector("#status:has-text('first audio')", timeout=30_000)

    page.goto(keyed_chat + "/chat")  # the key is remembered: no more questions
    page.wait_for_selector("#connection[data-state=open]")
    page.fill("#text-input", "When does the library open?")
    page.press("#text-input", "Enter")
    page.wait_for_selector("#log li.assistant:has-text('It opens at nine')", timeout=30_000)
    assert len(asked) == 2
    assert errors == []
    context.close()
