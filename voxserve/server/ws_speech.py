"""``/v1/audio/speech/stream``: text in (LLM tokens), audio out. Protocol: docs/websocket.md."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from voxserve.config import Settings
from voxserve.errors import (
    InsufficientQuotaError,
    InvalidRequestError,
    RateLimitedError,
    VoxserveError,
)
from voxserve.request import SpeechOptions
from voxserve.server.auth import charge_characters
from voxserve.server.errors import client_gone, count_error, validation_error
from voxserve.server.metrics import route_of
from voxserve.streaming import ClientError, Words, client_error, encode_stream
from voxserve.synthesis.cost import text_usd
from voxserve.synthesis.synthesizer import SpokenSegment, Synthesizer, Voicing
from voxserve.synthesis.text_stream import TextStream

logger = logging.getLogger("voxserve.server")
router = APIRouter()


class State(enum.Enum):
    IDLE = "idle"  # waiting for start
    OPEN = "open"  # taking text
    ENDING = "ending"  # end received, audio still going out
    FAILED = "failed"  # refused or failed: the rest of its text, up to end, is dropped quietly


def message_limit(settings: Settings) -> int:
    """The longest text message a WebSocket route reads, in characters: room for the longest
    text one request may speak, even with every character JSON-escaped, and the other fields."""
    return 4 * settings.max_input_chars + 4096


class ProtocolError(InvalidRequestError):
    """A message the protocol refuses: told, and the connection goes on."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message, param=param, code=code)


@router.websocket("/v1/audio/speech/stream")
async def speech_stream(websocket: WebSocket) -> None:
    await websocket.accept()
    websocket.app.state.metrics.requests.labels(route_of(websocket.scope), "101").inc()
    session = SpeechStreamSession(websocket, websocket.app.state.synthesizer)
    try:
        await session.run()
    except WebSocketDisconnect:
        pass
    finally:
        await session.stop()


class SpeechStreamSession:
    """One connection: utterances one after another, each from start to audio_stream_stop."""

    def __init__(self, websocket: WebSocket, synthesizer: Synthesizer):
        self.websocket = websocket
        self.synthesizer = synthesizer
        self.state = State.IDLE
        self.text: TextStream | None = None
        self.received = 0  # characters of text the utterance in progress has been sent
        self.speaking: asyncio.Task | None = None
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                await self.handle(message)
            except ProtocolError as error:
                await self.send_error(ClientError.of(error))

    async def handle(self, message: dict) -> None:
        if message.get("bytes") is not None:
            raise ProtocolError("binary_not_expected", "send JSON text; only audio is binary")
        raw = message.get("text") or ""
        limit = message_limit(self.synthesizer.settings)
        if len(raw) > limit:
            raise ProtocolError("message_too_large", f"a message may be {limit} characters at most")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ProtocolError("invalid_json", f"not valid JSON: {error.msg}") from error
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise ProtocolError("invalid_message", 'a message is a JSON object with a "type"')
        handler = {
            "start": self.on_start, "text": self.on_text, "flush": self.on_flush,
            "end": self.on_end, "cancel": self.on_cancel,
        }.get(data["type"])  # fmt: skip
        if handler is None:
            raise ProtocolError(
                "unknown_type", f"unknown message type {data['type']!r}; expected one of "
                "start, text, flush, end, cancel",
            )  # fmt: skip
        await handler(data)

    async def on_start(self, data: dict) -> None:
        if self.state is State.FAILED:
            self.state = State.IDLE  # a new utterance after one that never sent its end
        self.expect(State.IDLE, "already_started", "an utterance is in progress; end or cancel it")
        fields = {key: value for key, value in data.items() if key != "type"}
        fields.setdefault("response_format", "pcm")
        try:
            options = SpeechOptions.model_validate(fields)
            voicing = await self.synthesizer.resolver.resolve(options)
        except ValidationError as error:
            self.state = State.FAILED
            invalid = validation_error(error)
            raise ProtocolError("invalid_request", invalid.message, invalid.param) from error
        except VoxserveError as error:
            self.state = State.FAILED
            raise ProtocolError("invalid_request", error.message, error.param) from error
        plan = self.synthesizer.plan_options(voicing.engine)
        self.text = TextStream(
            voicing,
            plan,
            normalize=options.normalize,
            voicing_for=self.synthesizer.resolver.for_text,
        )
        self.received = 0
        self.state = State.OPEN
        await self.send_json(
            {"type": "audio_stream_start", "sample_rate": voicing.sample_rate,
             "format": options.response_format}
        )  # fmt: skip
        self.speaking = asyncio.create_task(self.speak(voicing, options.response_format))

    async def on_text(self, data: dict) -> None:
        if self.state is State.FAILED:
            return
        self.expect(State.OPEN, "not_started", "send start before text")
        text = data.get("text")
        if not isinstance(text, str):
            raise ProtocolError("invalid_message", '"text" must be a string', "text")
        limit = self.synthesizer.settings.max_stream_chars
        if self.received + len(text) > limit:
            await self.refuse(
                "utterance_too_long", f"an utterance may hold {limit} characters of text "
                "(max_stream_chars); this one is stopped, and what is sent for it up to its end "
                "is dropped", "text",
            )  # fmt: skip
            return
        try:
            self.websocket.app.state.spending.check(text_usd(self.text.voicing, text))
            charge_characters(len(text))
        except (RateLimitedError, InsufficientQuotaError) as error:
            # This text is refused, before it is charged or spent; the utterance goes on.
            raise ProtocolError(error.code, error.message, "text") from error
        self.received += len(text)
        # Splitting and normalizing a large piece takes a while: in a thread, nobody else waits.
        await self.text.push_in_thread(text)

    async def on_flush(self, _: dict) -> None:
        if self.state is State.FAILED:
            return
        self.expect(State.OPEN, "not_started", "send start before flush")
        await self.text.flush_in_thread()

    async def on_end(self, _: dict) -> None:
        if self.state is State.FAILED:
            self.state = State.IDLE
            return
        self.expect(State.OPEN, "not_started", "send start before end")
        self.state = State.ENDING
        await self.text.end_in_thread()

    async def on_cancel(self, _: dict) -> None:
        if self.state in (State.IDLE, State.FAILED):
            self.state = State.IDLE
            return
        await self.stop()
        await self.send_json({"type": "audio_stream_stop", "cancelled": True})

    async def refuse(self, code: str, message: str, param: str) -> None:
        """Stop the utterance in progress with an error; the text, flush and end messages the
        client sent for it before it heard of that are dropped quietly, up to its end."""
        await self.stop()
        self.state = State.FAILED
        await self.send_error(ClientError.of(ProtocolError(code, message, param)))
        await self.send_json({"type": "audio_stream_stop", "cancelled": True})

    async def speak(self, voicing: Voicing, audio_format: str) -> None:
        """One utterance's audio: frames, the words in them (before them) and segment timings
        as they are made, then the stop."""
        rendered = self.synthesizer.render(
            self.text.segments(), [voicing.engine], voicing.sample_rate
        )
        try:
            encoded = encode_stream(rendered, audio_format, voicing.sample_rate)
            async with contextlib.aclosing(encoded) as pieces:
                async for piece in pieces:
                    if isinstance(piece, bytes):
                        await self.send_bytes(piece)
                    elif isinstance(piece, Words):
                        await self.send_json({"type": "words", "words": piece.to_list()})
                    elif isinstance(piece, SpokenSegment):
                        await self.send_json(
                            {"type": "segment", "index": piece.segment.index,
                             "text": piece.segment.text, "start_ms": round(piece.start * 1000),
                             "end_ms": round(piece.end * 1000)}
                        )  # fmt: skip
        except Exception as error:  # a bug too ends the utterance: told, never silent
            if client_gone(self.websocket, error):
                raise
            told = client_error(error, logger, "speaking an utterance")
            await self.send_error(told, default_code="engine_failed")
            # Text the client sent before it heard of the failure is dropped until its end.
            self.state = State.FAILED if self.state is State.OPEN else State.IDLE
        else:
            self.state = State.IDLE
        self.speaking, self.text = None, None
        await self.send_json({"type": "audio_stream_stop", "cancelled": False})

    async def stop(self) -> None:
        """Cancel the utterance in progress, if any: engine work stops, queued audio is dropped."""
        if self.text is not None:
            self.text.close()  # what is still buffered is dropped unread
        if self.speaking is not None:
            self.speaking.cancel()
            # It may have failed already (a send to a closed socket): nothing left to report.
            await asyncio.gather(self.speaking, return_exceptions=True)
        self.state, self.speaking, self.text = State.IDLE, None, None

    def expect(self, state: State, code: str, message: str) -> None:
        if self.state is not state:
            raise ProtocolError(code, f"{message} (the stream is {self.state.value})")

    async def send_error(self, told: ClientError, default_code: str | None = None) -> None:
        message = told.ws_message(default_code)
        count_error(self.websocket.app, self.websocket.scope, message["code"])
        await self.send_json(message)

    async def send_json(self, data: dict) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(data))

    async def send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self.websocket.send_bytes(data)
