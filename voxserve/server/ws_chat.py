"""``/v1/chat/ws``: the voice chat, one WebSocket per client (protocol: docs/chat.md)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect

from voxserve.chat.history import ConversationStore, history_disabled
from voxserve.chat.llm import LLM, OpenAICompatibleLLM
from voxserve.chat.messages import parse_message
from voxserve.chat.session import ChatSession
from voxserve.config import ChatSettings, Settings
from voxserve.errors import InvalidRequestError
from voxserve.server.errors import client_gone, count_error
from voxserve.server.metrics import route_of
from voxserve.streaming import client_error

logger = logging.getLogger("voxserve.chat")
router = APIRouter()
MAX_OFFSET = 2**31 - 1  # far past any real list, and an integer every database takes


def chat_llm(settings: ChatSettings) -> LLM | None:
    """The configured endpoint; else the embedded model when its extra is installed; else None
    (a reply then says how to configure one)."""
    if settings.llm_base_url:
        return OpenAICompatibleLLM(
            settings.llm_base_url,
            settings.llm_model,
            settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
            timeout=settings.llm_timeout,
            first_token_timeout=settings.llm_first_token_timeout,
        )
    if importlib.util.find_spec("llama_cpp") and importlib.util.find_spec(
        "voxserve.chat.local_llm"
    ):
        from voxserve.chat.local_llm import LocalLLM

        return LocalLLM(max_tokens=settings.max_reply_tokens, n_threads=settings.llm_threads)
    return None


def conversation_store(settings: Settings) -> ConversationStore | None:
    if not settings.chat.keep_history:
        return None
    url = settings.chat.database_url
    if url is None:
        settings.data_path.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{settings.data_path / 'chat.db'}"
    return ConversationStore(url)


def _store(request: Request) -> ConversationStore:
    store = request.app.state.chat_history
    if store is None:
        raise history_disabled()
    return store


@router.get("/v1/chat/conversations")
async def list_conversations(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> dict:
    """Saved conversations, the most recently active first."""
    summaries = await asyncio.to_thread(_store(request).recent, limit, offset)
    return {"object": "list", "data": [summary.to_dict() for summary in summaries]}


@router.get("/v1/chat/conversations/{conversation_id}")
async def get_conversation(request: Request, conversation_id: str) -> dict:
    return (await asyncio.to_thread(_store(request).get, conversation_id)).to_dict()


@router.delete("/v1/chat/conversations/{conversation_id}")
async def delete_conversation(request: Request, conversation_id: str) -> dict:
    await asyncio.to_thread(_store(request).delete, conversation_id)
    return {"id": conversation_id, "object": "conversation", "deleted": True}


@router.websocket("/v1/chat/ws")
async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    app = websocket.app
    app.state.metrics.requests.labels(route_of(websocket.scope), "101").inc()
    send_lock = asyncio.Lock()

    # A send to a client that has left goes nowhere: the receive loop below sees it leave and
    # closes the session. Raised, it would reach a reply's task as a failed reply, and be logged
    # and reported as one.
    async def send(send_frame: Callable[[Any], Awaitable[None]], data: str | bytes) -> None:
        async with send_lock:
            if client_gone(websocket):
                return
            with contextlib.suppress(WebSocketDisconnect):
                await send_frame(data)

    async def send_json(message: dict) -> None:
        if message.get("type") == "error":
            count_error(app, websocket.scope, message.get("code") or "chat_error")
        await send(websocket.send_text, json.dumps(message))

    async def send_bytes(data: bytes) -> None:
        await send(websocket.send_bytes, data)

    synthesizer = app.state.synthesizer
    session = ChatSession(
        synthesizer,
        app.state.chat_llm,
        synthesizer.settings.chat,
        send_json,
        send_bytes,
        app.state.chat_warmup,
        app.state.chat_history,
        check_spending=app.state.spending.check,
    )
    try:
        await session.start()
        while (message := await websocket.receive())["type"] != "websocket.disconnect":
            try:
                if message.get("bytes") is not None:
                    await _on_audio(session, message["bytes"])
                else:
                    await session.on_message(parse_message(message.get("text") or ""))
            except Exception as error:  # a bad message, or a bug: say so, keep the chat
                told = client_error(error, logger, "handling a chat message")
                await send_json(told.ws_message())
    except WebSocketDisconnect:
        pass
    finally:
        await session.close()


async def _on_audio(session: ChatSession, frame: bytes) -> None:
    try:
        await session.on_audio(frame)
    except ValueError as error:  # a malformed frame (stt._frame_samples says how)
        raise InvalidRequestError(str(error), code="invalid_message") from None
