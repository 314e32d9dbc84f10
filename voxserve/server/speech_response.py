"""How a speech answer goes out: audio or OpenAI's SSE events, streamed or whole.

The speech route and dialogues (sent to it or to their own route) hand over the same thing, their
encoded audio in order with any other events in between (a dialogue's turns), and get the same
four answers: ``stream`` (true: as it is made) by ``stream_format`` (``audio`` or ``sse``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from voxserve.audio import AUDIO_FORMATS, fix_wav_header
from voxserve.errors import VoxserveError
from voxserve.server.disconnects import ClientLeft, unless_client_leaves

logger = logging.getLogger("voxserve.server")

Piece = bytes | dict[str, Any]
"""Encoded audio, or an SSE event that is not audio (sent only in SSE mode)."""

EVENT_STREAM = "text/event-stream"
SSE_DELTA_BYTES = 48 * 1024
"""Audio per ``speech.audio.delta`` event when a whole answer is cut into events."""
CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a request whose client left before the answer: nobody reads it, but the
request metrics count it."""


def content_type(audio_format: str, sample_rate: int) -> str:
    if audio_format == "pcm":
        return f"audio/pcm;rate={sample_rate};channels=1;encoding=s16le"
    return AUDIO_FORMATS[audio_format]


async def speech_response(
    pieces: AsyncIterator[Piece],
    *,
    request: Request,
    audio_format: str,
    sample_rate: int,
    sse: bool,
    streamed: bool,
    headers: dict[str, str],
    done: Callable[[], dict[str, Any]],
) -> Response:
    """The answer for ``pieces``; ``done`` gives the fields of the final ``speech.audio.done``
    event (usage, ...) once the pieces have ended."""
    if not streamed:
        # Made in full before answering: any failure is a proper status, and wav gets real sizes.
        try:
            whole = await unless_client_leaves(_collect(pieces, audio_format), _left(request))
        except ClientLeft:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        if sse:
            body = b"".join(_events(whole, done))
            return Response(body, media_type=EVENT_STREAM, headers=headers)
        audio = b"".join(piece for piece in whole if isinstance(piece, bytes))
        return Response(audio, media_type=content_type(audio_format, sample_rate), headers=headers)
    if sse:
        events = _event_stream(pieces, done)
        return await _streaming(events, EVENT_STREAM, headers, _error_event)
    media_type = content_type(audio_format, sample_rate)
    return await _streaming(_audio_only(pieces), media_type, headers, _log_error)


async def _left(request: Request) -> bool:
    """True once the client has disconnected. Its body has been read: the next ASGI message can
    only be ``http.disconnect``."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    return True


async def _streaming(
    parts: AsyncIterator[bytes],
    media_type: str,
    headers: dict[str, str],
    on_error: Callable[[VoxserveError], bytes],
) -> StreamingResponse:
    # The first part is made before answering, so being busy (429), a load failure or an engine
    # failure is a proper status rather than a broken stream; it costs no latency, since the
    # headers would otherwise only be followed by that same first part.
    try:
        first = await anext(parts, b"")
    except BaseException:
        await parts.aclose()
        raise
    body = _after_first(first, parts, on_error)
    return StreamingResponse(body, media_type=media_type, headers=headers)


async def _after_first(
    first: bytes, parts: AsyncIterator[bytes], on_error: Callable[[VoxserveError], bytes]
) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(parts):
        try:
            yield first
            async for part in parts:
                yield part
        except VoxserveError as error:
            # The headers are gone already: end the stream early, saying why where the format can.
            if last := on_error(error):
                yield last


def _log_error(error: VoxserveError) -> bytes:
    logger.error("speech stream failed: %s", error.message, exc_info=error.__cause__)
    return b""


def _error_event(error: VoxserveError) -> bytes:
    _log_error(error)
    return sse_event({"type": "error", **error.to_dict()})


async def _audio_only(pieces: AsyncIterator[Piece]) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            if isinstance(piece, bytes) and piece:
                yield piece


async def _event_stream(
    pieces: AsyncIterator[Piece], done: Callable[[], dict[str, Any]]
) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            if piece:
                yield _event(piece)
    yield sse_event({"type": "speech.audio.done", **done()})


def _events(pieces: list[Piece], done: Callable[[], dict[str, Any]]) -> list[bytes]:
    events = [_event(piece) for piece in pieces if piece]
    return [*events, sse_event({"type": "speech.audio.done", **done()})]


def _event(piece: Piece) -> bytes:
    if isinstance(piece, bytes):
        return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()})
    return sse_event(piece)


def sse_event(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


async def _collect(pieces: AsyncIterator[Piece], audio_format: str) -> list[Piece]:
    """Every piece, the audio in parts of at most ``SSE_DELTA_BYTES``; a wav gets its sizes."""
    async with contextlib.aclosing(pieces):
        collected = [piece async for piece in pieces]
    audio = b"".join(piece for piece in collected if isinstance(piece, bytes))
    if audio_format == "wav" and audio:
        audio = fix_wav_header(audio)
    # The audio goes back between the other events where it was (only its header changed).
    whole: list[Piece] = []
    offset = 0
    for piece in collected:
        if isinstance(piece, bytes):
            part, offset = audio[offset : offset + len(piece)], offset + len(piece)
            whole.extend(_cut(part))
        else:
            whole.append(piece)
    return whole


def _cut(audio: bytes) -> list[bytes]:
    return [audio[at : at + SSE_DELTA_BYTES] for at in range(0, len(audio), SSE_DELTA_BYTES)]


def usage(characters: int) -> dict[str, Any]:
    """OpenAI's usage block; voxserve counts characters, as tokens mean nothing to its engines."""
    return {"usage": {"input_tokens": characters, "output_tokens": 0, "total_tokens": characters}}
