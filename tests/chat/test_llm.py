"""The LLM client against a real local server speaking OpenAI's chat-completions stream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.conftest import free_port, running
from voxserve.chat.characters import (
    USER,
    Character,
    ChatTurn,
    build_messages,
    choose_next_speaker,
)
from voxserve.chat.llm import LLMError, OpenAICompatibleLLM
from voxserve.errors import InvalidRequestError

# -- a chat-completions server that streams like OpenAI's ------------------------------------


@dataclass
class ServerState:
    """What the server saw; it runs in uvicorn's thread, so thread-safe events only."""

    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    proceed: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)


def chunk(delta: dict, *, finish_reason: str | None = None) -> str:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "test-model",
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(body)}\n\n"


def usage_chunk() -> str:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    return f"data: {json.dumps(body)}\n\n"


def openai_error(status: int, message: str, error_type: str, code: str | None) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


async def wait_for(event: threading.Event, seconds: float) -> bool:
    return await asyncio.to_thread(event.wait, seconds)


@dataclass
class Server:
    """The server's URL and the record of the current test (renewed by each test)."""

    url: str = ""
    state: ServerState = field(default_factory=ServerState)


def make_app(server: Server) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        state = server.state
        body = await request.json()
        state.requests.append(body)
        state.headers.append(dict(request.headers))
        scenario = body["model"]
        if scenario == "unauthorized":
            return openai_error(
                401,
                "Incorrect API key provided: sk-wrong. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if scenario == "boom":
            return openai_error(
                500,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            )
        if scenario == "echo":  # an error that repeats what it was sent, as one server did
            sent = request.headers.get("authorization", "")
            return openai_error(401, f"Refused {sent} at {request.url}", "auth_error", sent)
        if scenario == "echo-mid-reply":
            sent = request.headers.get("authorization", "")
            return StreamingResponse(
                iter([f"data: {json.dumps({'error': {'message': sent, 'code': sent}})}\n\n"]),
                media_type="text/event-stream",
            )
        if scenario == "slow-headers":
            await wait_for(state.proceed, 2)
        return StreamingResponse(events(scenario, state), media_type="text/event-stream")

    async def events(scenario: str, state: ServerState):
        completed = False
        try:
            yield chunk({"role": "assistant", "content": "", "refusal": None})
            if scenario == "stall":
                await wait_for(state.proceed, 2)
            if scenario == "endless":
                while True:
                    yield chunk({"content": "more "})
                    await asyncio.sleep(0.01)
            yield chunk({"content": "Hello"})
            if scenario == "broken":
                yield "data: {not json\n\n"
                return
            # Hold the rest until the client has the first piece: proves it is not buffering.
            await wait_for(state.proceed, 5)
            yield ": keep-alive\n\n"
            for piece in (", wor", "ld", "!"):
                await asyncio.sleep(0.01)
                yield chunk({"content": piece})
            yield chunk({}, finish_reason="stop")
            yield usage_chunk()
            yield "data: [DONE]\n\n"
            completed = True
            state.finished.set()
        finally:
            if not completed:
                state.disconnected.set()

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    server = Server()
    with running(make_app(server)) as url:
        server.url = url + "/v1"
        yield server


@pytest.fixture
def llm_server(server: Server) -> Iterator[tuple[str, ServerState]]:
    """The module's server with a fresh record of what it saw."""
    state = server.state = ServerState()
    yield server.url, state
    state.proceed.set()  # release any handler still waiting


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]


async def collect(llm: OpenAICompatibleLLM, **kwargs) -> list[str]:
    return [piece async for piece in llm.stream(MESSAGES, **kwargs)]


# -- streaming -------------------------------------------------------------------------------


async def test_pieces_arrive_as_the_server_sends_them(llm_server):
    url, state = llm_server
    async with OpenAICompatibleLLM(url, "ok", api_key="sk-test", temperature=0.2) as llm:
        pieces = []
        async with contextlib.aclosing(llm.stream(MESSAGES, max_tokens=64)) as stream:
            async for piece in stream:
                if not pieces:
                    assert not state.finished.is_set(), "the first piece came only at the end"
                    state.proceed.set()
                pieces.append(piece)
    assert pieces == ["Hello", ", wor", "ld", "!"]
    assert state.finished.is_set()
    request = state.requests[-1]
    assert request["model"] == "ok"
    assert request["messages"] == MESSAGES
    assert request["stream"] is True
    assert request["max_tokens"] == 64
    assert request["temperature"] == 0.2
    assert state.headers[-1]["authorization"] == "Bearer sk-test"


async def test_no_api_key_sends_no_authorization_and_no_max_tokens(llm_server):
    url, state = llm_server
    state.proceed.set()
    async with OpenAICompatibleLLM(url + "/", "ok") as llm:  # a trailing slash is fine
        assert "".join(await collect(llm)) == "Hello, world!"
    assert "authorization" not in state.headers[-1]
    assert "max_tokens" not in state.requests[-1]


async def test_closing_the_stream_early_closes_the_response(llm_server):
    url, state = llm_server
    async with OpenAICompatibleLLM(url, "endless") as llm:
        stream = llm.stream(MESSAGES)
        assert await anext(stream) == "more "
        await stream.aclose()
        assert await asyncio.to_thread(state.disconnected.wait, 5)


async def test_cancelling_the_consuming_task_closes_the_response(llm_server):
    url, state = llm_server
    async with OpenAICompatibleLLM(url, "endless") as llm:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in llm.stream(MESSAGES):
                started.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(state.disconnected.wait, 5)


# -- errors ----------------------------------------------------------------------------------


async def test_401_names_the_servers_message_and_the_api_key(llm_server):
    url, _ = llm_server
    async with OpenAICompatibleLLM(url, "unauthorized", api_key="sk-wrong") as llm:
        with pytest.raises(LLMError) as caught:
            await collect(llm)
    error = caught.value
    assert "answered HTTP 401 Unauthorized (invalid_api_key); check the API key" in error.message
    assert "sk-wrong" not in error.message  # the server's message is not passed on
    assert error.upstream_status == 401
    assert not error.retryable


async def test_500_carries_the_servers_message_and_is_retryable(llm_server):
    url, _ = llm_server
    async with OpenAICompatibleLLM(url, "boom") as llm:
        with pytest.raises(LLMError) as caught:
            await collect(llm)
    assert "answered HTTP 500 Internal Server Error (server_error)" in caught.value.message
    assert caught.value.retryable


async def test_a_closed_port_is_not_reachable_and_retryable():
    url = f"http://127.0.0.1:{free_port()}/v1"
    async with OpenAICompatibleLLM(url, "any") as llm:
        with pytest.raises(LLMError) as caught:
            await collect(llm)
    assert caught.value.message.startswith(f"the LLM at {url} is not reachable: ")
    assert caught.value.retryable


@pytest.mark.parametrize("scenario", ["stall", "slow-headers"])
async def test_a_stalled_server_times_out_quickly_and_retryably(llm_server, scenario):
    url, _ = llm_server
    async with OpenAICompatibleLLM(url, scenario, first_token_timeout=0.3) as llm:
        started = time.monotonic()
        with pytest.raises(LLMError) as caught:
            await collect(llm)
    assert time.monotonic() - started < 1.5
    assert "did not start answering within 0.3 s" in caught.value.message
    assert caught.value.retryable


async def test_a_stall_between_pieces_times_out_retryably(llm_server):
    url, _ = llm_server
    async with OpenAICompatibleLLM(url, "ok", timeout=0.3) as llm:
        pieces = []
        with pytest.raises(LLMError) as caught:
            async for piece in llm.stream(MESSAGES):
                pieces.append(piece)  # never sets proceed: the server holds the rest
    assert pieces == ["Hello"]
    assert "stopped sending mid-reply" in caught.value.message
    assert caught.value.retryable


async def test_a_malformed_stream_is_not_retryable(llm_server):
    url, _ = llm_server
    async with OpenAICompatibleLLM(url, "broken") as llm:
        pieces = []
        with pytest.raises(LLMError) as caught:
            async for piece in llm.stream(MESSAGES):
                pieces.append(piece)
    assert pieces == ["Hello"]
    assert "malformed stream" in caught.value.message
    assert not caught.value.retryable


@pytest.mark.parametrize("scenario", ["echo", "echo-mid-reply"])
async def test_no_password_or_key_reaches_a_message_or_a_log(llm_server, caplog, scenario):
    """A password in the base URL and the API key never show, not even when the server's error
    echoes what it was sent: only its status and error code are passed on."""
    url, state = llm_server
    password, key = "hunter2-url-password", "sk-echoed-key-0123456789"
    with_password = url.replace("http://", f"http://ava:{password}@")
    caplog.set_level(logging.DEBUG)
    messages = []
    for base_url, api_key in ((with_password, None), (url, key)):
        async with OpenAICompatibleLLM(base_url, scenario, api_key=api_key) as llm:
            with pytest.raises(LLMError) as caught:
                await collect(llm)
        messages.append(caught.value.message)
    sent = [headers["authorization"] for headers in state.headers]
    basic = base64.b64encode(f"ava:{password}".encode()).decode()
    assert sent == [f"Basic {basic}", f"Bearer {key}"]  # both still reached the server
    assert messages[0].startswith(f"the LLM at {url} ")  # where it is, without the password
    shown = "\n".join(messages) + caplog.text
    assert "HTTP Request: POST" in caplog.text  # httpx's log line was captured
    for secret in (password, key, basic):
        assert secret not in shown


def test_a_url_without_a_scheme_is_refused_at_once():
    with pytest.raises(LLMError, match="must start with http"):
        OpenAICompatibleLLM("localhost:8080/v1", "any")


# -- messages --------------------------------------------------------------------------------

AVA = Character("Ava", voice="ava", persona="You are Ava, a cheerful astronomer.")
BEN = Character("Ben", voice="ben", persona="You are Ben, a grumpy baker.")
CLEO = Character("Cleo", voice="cleo", persona="You are Cleo, a curious child.")


def test_build_messages_puts_the_persona_first_and_keeps_names():
    history = [
        ChatTurn(USER, "Hello both of you."),
        ChatTurn("Ava", "Hi! Lovely night for stargazing."),
        ChatTurn("Ben", "Too cold for it."),
        ChatTurn(USER, "Ava, what can we see?"),
    ]
    messages = build_messages(AVA, history, others=[BEN])
    system = messages[0]
    assert system["role"] == "system"
    assert system["content"].startswith(AVA.persona)
    assert "Ben" in system["content"] and "markdown" in system["content"]
    assert messages[1:] == [
        {"role": "user", "content": "Hello both of you."},
        {"role": "assistant", "content": "Hi! Lovely night for stargazing."},
        {"role": "user", "content": "Ben: Too cold for it."},
        {"role": "user", "content": "Ava, what can we see?"},
    ]


def test_build_messages_names_others_from_the_history_and_only_them():
    alone = build_messages(AVA, [ChatTurn(USER, "Hi.")])
    assert "Also present" not in alone[0]["content"]
    assert "Answer only as Ava" in alone[0]["content"]
    together = build_messages(BEN, [ChatTurn("Ava", "Hi."), ChatTurn("Cleo", "Hello!")])
    assert "Also present: Ava, Cleo." in together[0]["content"]
    assert together[1:] == [
        {"role": "user", "content": "Ava: Hi."},
        {"role": "user", "content": "Cleo: Hello!"},
    ]


def test_build_messages_keeps_the_last_max_turns():
    history = [ChatTurn(USER, f"turn {n}") for n in range(10)]
    messages = build_messages(AVA, history, max_turns=3)
    assert [m["content"] for m in messages[1:]] == ["turn 7", "turn 8", "turn 9"]
    assert len(build_messages(AVA, history, max_turns=0)) == 1
    assert len(build_messages(AVA, history)) == 11


def test_old_turns_are_let_go_half_a_window_at_a_time():
    # An LLM's prompt cache keeps what it has read only while the prompt's start stays the same.
    def first_turn(turns: int) -> str:
        history = [ChatTurn(USER, f"turn {n}") for n in range(turns)]
        return build_messages(AVA, history, max_turns=4)[1]["content"]

    assert [first_turn(n) for n in range(4, 11)] == [
        "turn 0", "turn 2", "turn 2", "turn 4", "turn 4", "turn 6", "turn 6",
    ]  # fmt: skip


def test_build_messages_skips_empty_turns():
    messages = build_messages(AVA, [ChatTurn("Ava", "  "), ChatTurn(USER, "Still there?")])
    assert messages[1:] == [{"role": "user", "content": "Still there?"}]


# -- next speaker ----------------------------------------------------------------------------

CAST = [AVA, BEN, CLEO]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hey, Ava!", AVA),
        ("what do you think, ben?", BEN),
        ("CLEO: your turn", CLEO),
        ("Ben and Ava, listen.", BEN),  # the earliest mention wins
        ("Benjamin and Avalon", CLEO),  # whole words only: falls back to round robin
    ],
)
def test_a_character_addressed_by_name_answers(text, expected):
    assert choose_next_speaker(CAST, text, last_speaker="Ben") == expected


def test_round_robin_takes_the_next_after_the_last_speaker():
    assert choose_next_speaker(CAST, "So?", last_speaker=None) == AVA
    assert choose_next_speaker(CAST, "So?", last_speaker="Ava") == BEN
    assert choose_next_speaker(CAST, "So?", last_speaker="Cleo") == AVA
    assert choose_next_speaker(CAST, "So?", last_speaker="someone gone") == AVA


def test_first_always_takes_the_first_unless_another_is_addressed():
    assert choose_next_speaker(CAST, "So?", "Ava", policy="first") == AVA
    assert choose_next_speaker(CAST, "Cleo?", "Ava", policy="first") == CLEO


def test_random_is_repeatable_with_a_seed_and_avoids_the_last_speaker():
    def draws(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [choose_next_speaker(CAST, "So?", "Ava", "random", rng=rng).name for _ in range(20)]

    assert draws(7) == draws(7)
    assert set(draws(7)) == {"Ben", "Cleo"}
    assert choose_next_speaker([AVA], "So?", "Ava", "random", rng=random.Random(1)) == AVA


def test_an_unknown_policy_is_a_clear_error():
    with pytest.raises(InvalidRequestError, match="round_robin"):
        choose_next_speaker(CAST, "So?", None, policy="loudest")  # type: ignore[arg-type]
