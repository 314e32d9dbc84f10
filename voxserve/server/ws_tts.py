"""``/ws/tts``: the TTS-provider WebSocket protocol, for clients written for it (docs/websocket.md).

One JSON request -> a JSON status -> the audio as a WAV file in binary frames;
``{"command": "info"}`` describes the models and the speaker table.
"""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxserve import __version__
from voxserve.engines.base import Engine
from voxserve.errors import InvalidRequestError
from voxserve.request import SpeechRequest
from voxserve.server.auth import charge_characters
from voxserve.server.disconnects import unless_client_leaves
from voxserve.server.errors import client_gone, count_error, validation_error
from voxserve.server.metrics import route_of
from voxserve.server.spending import check_budget
from voxserve.server.ws_speech import message_limit
from voxserve.streaming import client_error, encode_whole
from voxserve.synthesis.synthesizer import Synthesizer

logger = logging.getLogger("voxserve.server")
router = APIRouter()
FRAME_BYTES = 1 << 20
SPEAKER_ROLES = ("primary male", "primary female", "secondary male", "secondary female")


class ProviderRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    speaker: int = Field(0, ge=0)
    voice: str | None = None
    model: str | None = None
    lang: str | None = None
    sample_rate: int | None = None


@router.websocket("/ws/tts")
async def tts_provider(websocket: WebSocket) -> None:
    await websocket.accept()
    websocket.app.state.metrics.requests.labels(route_of(websocket.scope), "101").inc()
    synthesizer: Synthesizer = websocket.app.state.synthesizer
    inbox = Inbox(websocket)
    try:
        while True:
            message = await inbox.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                await _answer(websocket, inbox, synthesizer, message)
            except Exception as error:  # a bug too is told, and the next request is served
                if client_gone(websocket, error):  # (ClientLeft too: the socket is closed)
                    return
                told = client_error(error, logger, "answering a /ws/tts request")
                code = told.code or "invalid_request"
                count_error(websocket.app, websocket.scope, code)
                # The request's field is "text" where a speech request's is "input".
                param = "text" if told.param == "input" else told.param
                await websocket.send_text(
                    json.dumps(
                        {"status": "error", "message": told.message, "code": code, "param": param}
                    )
                )
    except WebSocketDisconnect:
        return
    finally:
        inbox.close()


class Inbox:
    """A WebSocket's messages, the next of which can be awaited while a request is answered, to
    learn whether the client has left; a request that came instead is kept for ``receive``."""

    def __init__(self, websocket: WebSocket):
        self.websocket = websocket
        self._next: asyncio.Task[dict] | None = None

    async def receive(self) -> dict:
        if self._next is None:
            return await self.websocket.receive()
        receiving, self._next = self._next, None
        return await receiving

    async def left(self) -> bool:
        """Whether the client's next message says that it has gone."""
        if self._next is None:
            self._next = asyncio.ensure_future(self.websocket.receive())
        # Shielded: whoever stops waiting for this answer must not lose the message.
        return (await asyncio.shield(self._next))["type"] == "websocket.disconnect"

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()


async def _answer(
    websocket: WebSocket, inbox: Inbox, synthesizer: Synthesizer, message: dict
) -> None:
    if message.get("text") is None:
        raise InvalidRequestError("send a JSON text message", code="binary_not_expected")
    limit = message_limit(synthesizer.settings)
    if len(message["text"]) > limit:
        raise InvalidRequestError(
            f"a message may be {limit} characters at most", code="message_too_large"
        )
    try:
        data = json.loads(message["text"])
    except json.JSONDecodeError as error:
        raise InvalidRequestError(f"not valid JSON: {error.msg}", code="invalid_json") from error
    if not isinstance(data, dict):
        raise InvalidRequestError("a request is a JSON object", code="invalid_json")
    if data.get("command") == "info":
        await websocket.send_text(json.dumps(server_info(synthesizer)))
        return
    try:
        provider = ProviderRequest.model_validate(data)
        if not provider.text.strip():
            raise InvalidRequestError("text is empty", param="text", code="empty_text")
        engine = synthesizer.registry.engine_for_model(provider.model)
        speech = SpeechRequest(
            input=provider.text, voice=provider.voice or speaker_voice(synthesizer, engine,
            provider.speaker), model=engine.name, language=provider.lang,
            sample_rate=provider.sample_rate, response_format="wav",
        )  # fmt: skip
    except ValidationError as error:
        raise validation_error(error) from error
    # Normalizing and planning the text takes a while for a long one: in a thread, nobody waits.
    prepared = await asyncio.to_thread(synthesizer.prepare, speech)
    charge_characters(len(provider.text))
    check_budget(websocket.app, prepared.segments)
    if not synthesizer.registry.is_loaded(engine.name):
        await websocket.send_text(
            json.dumps(
                {"status": "loading", "message": f"loading {engine.name}; your request waits"}
            )
        )
    chunks = synthesizer.stream(prepared)
    encoded = encode_whole(chunks, "wav", prepared.sample_rate)
    audio = (await unless_client_leaves(encoded, inbox.left())).audio
    await websocket.send_text(
        json.dumps({"status": "success", "format": "wav", "sample_rate": prepared.sample_rate,
                    "length_bytes": len(audio)})
    )  # fmt: skip
    for start in range(0, len(audio), FRAME_BYTES):
        await websocket.send_bytes(audio[start : start + FRAME_BYTES])


def speaker_table(synthesizer: Synthesizer, engine: Engine) -> list[str]:
    """Voice ids by speaker id: the four roles, then every other voice of the engine."""
    voices = [voice.id for voice in engine.voices()]
    roles = synthesizer.settings.speakers.get(engine.name) or voices[:1] * len(SPEAKER_ROLES)
    return list(roles) + [voice for voice in voices if voice not in roles]


def speaker_voice(synthesizer: Synthesizer, engine: Engine, speaker: int) -> str:
    table = speaker_table(synthesizer, engine)
    if speaker >= len(table):
        raise InvalidRequestError(
            f"unknown speaker {speaker} for {engine.name}: speakers are 0-{len(table) - 1}",
            param="speaker", code="unknown_speaker",
        )  # fmt: skip
    return table[speaker]


def server_info(synthesizer: Synthesizer) -> dict:
    registry = synthesizer.registry
    default = registry.get(synthesizer.settings.default_engine)
    models, speakers = [], {}
    for name in registry.names():
        if not registry.is_installed(name):
            continue
        engine = registry.get(name)
        capabilities = engine.capabilities
        models.append(
            {"name": name, "languages": list(capabilities.languages),
             "sample_rate": capabilities.sample_rate, "loaded": registry.is_loaded(name),
             "streaming": capabilities.streaming, "cloning": capabilities.cloning}
        )  # fmt: skip
        speakers[name] = {
            str(number): voice for number, voice in enumerate(speaker_table(synthesizer, engine))
        }
    queued = sum(scheduler.queued_streams for scheduler in synthesizer.schedulers().values())
    return {
        "status": "success",
        "server_version": __version__,
        "current_model": {"name": default.name, "sample_rate": default.capabilities.sample_rate},
        "available_models": models,
        "model_loaded": registry.is_loaded(default.name),
        "queue_size": queued,
        "speaker_mapping": dict(enumerate(SPEAKER_ROLES)),
        "speakers": speakers,
    }
