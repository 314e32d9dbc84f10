"""How a speech answer goes out over HTTP: audio, JSON with word timestamps, or OpenAI's SSE
events, streamed or whole.

The speech route and dialogues (sent to it or to their own route) hand over the same thing, their
encoded audio in order with its words and any other events in between (a dialogue's turns), and
get the same answers: ``stream`` (true: as it is made) by ``stream_format`` (``audio`` or
``sse``); a whole ``audio`` answer asked for with ``timestamps`` or ``captions`` is JSON. The
encoding and the events themselves are `voxserve.streaming`'s.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from voxserve.audio import AUDIO_FORMATS
from voxserve.audio.captions import render_captions
from voxserve.errors import InvalidRequestError, VoxserveError
from voxserve.request import Delivery
from voxserve.server.disconnects import ClientLeft, unless_client_leaves
from voxserve.streaming import (
    Words,
    audio_of,
    client_error,
    sse_cut,
    sse_done,
    sse_error,
    sse_piece,
    whole,
    words_of,
)

logger = logging.getLogger("voxserve.server")

Piece = bytes | Words | dict[str, Any]
"""Encoded audio, the words in it, or an SSE event of the caller's own (sent only in SSE mode)."""

EVENT_STREAM = "text/event-stream"
CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a request whose client left before the answer: nobody reads it, but the
request metrics count it."""


def check_timestamps(speech: Delivery) -> None:
    """Word timestamps come in JSON with a whole answer, or as SSE events; a streamed audio body
    has nowhere to put them: refused rather than dropped."""
    if speech.timestamps and speech.stream and speech.stream_format == "audio":
        raise InvalidRequestError(
            "timestamps: a streamed audio answer cannot carry them; set stream to false (JSON "
            'with the audio and its timestamps) or stream_format to "sse" (word events)',
            param="timestamps",
        )
    if speech.captions is not None and (speech.stream or speech.stream_format == "sse"):
        raise InvalidRequestError(
            "captions: a captions file comes with a whole answer: set stream to false (JSON "
            "with the audio and its captions)",
            param="captions",
        )


def ignored_header(ignored: tuple[str, ...]) -> dict[str, str]:
    """Fields a request sent that its engine accepts without honouring: said, not dropped
    unseen (``X-Ignored-Fields: instructions``)."""
    return {"X-Ignored-Fields": ", ".join(ignored)} if ignored else {}


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
    timestamps: bool = False,
    captions: str | None = None,
) -> Response:
    """The answer for ``pieces``; ``done`` gives the fields of the final ``speech.audio.done``
    event (usage, ...) once the pieces have ended. ``timestamps``: a whole audio answer is JSON,
    the audio in base64 and its words (a streamed one is refused before, `openai.py`);
    ``captions`` (a format of `voxserve.audio.captions`) adds the captions file's text."""
    if not streamed:
        # Made in full before answering: any failure is a proper status, and wav gets real sizes.
        try:
            made = await unless_client_leaves(whole(pieces, audio_format), _left(request))
        except ClientLeft:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        if sse:
            return Response(_events(made, done), media_type=EVENT_STREAM, headers=headers)
        if timestamps or captions:
            words = words_of(made)
            body = {
                "audio": base64.b64encode(audio_of(made)).decode(),
                "format": audio_format,
                "sample_rate": sample_rate,
                "timestamps": [w.to_dict() for w in words],
            }
            if captions:
                body |= {"captions": render_captions(words, captions), "captions_format": captions}
            return JSONResponse(body, headers=headers)
        media_type = content_type(audio_format, sample_rate)
        return Response(audio_of(made), media_type=media_type, headers=headers)
    if sse:
        events = _event_stream(pieces, done)
        return await streaming_answer(events, EVENT_STREAM, headers, sse=True)
    media_type = content_type(audio_format, sample_rate)
    return await streaming_answer(_audio_only(pieces), media_type, headers, sse=False)


async def _left(request: Request) -> bool:
    """True once the client has disconnected. Its body has been read: the next ASGI message can
    only be ``http.disconnect``."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    return True


async def streaming_answer(
    parts: AsyncIterator[bytes], media_type: str, headers: dict[str, str], *, sse: bool
) -> StreamingResponse:
    # The first part is made before answering, so being busy (429), a load failure or an engine
    # failure is a proper status rather than a broken stream; it costs no latency, since the
    # headers would otherwise only be followed by that same first part.
    try:
        first = await anext(parts, b"")
    except BaseException:
        await parts.aclose()
        raise
    return StreamingResponse(
        _after_first(first, parts, sse), media_type=media_type, headers=headers
    )


async def _after_first(
    first: bytes, parts: AsyncIterator[bytes], sse: bool
) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(parts):
        try:
            yield first
            async for part in parts:
                yield part
        except Exception as error:
            # The headers are gone already: end the stream early, saying why where the format
            # can (an SSE error event, a bug told as internal_error). A plain audio body cannot:
            # a bug there breaks the connection, so the client knows its audio is cut short.
            if not (sse or isinstance(error, VoxserveError)):
                raise
            told = client_error(error, logger, "streaming a speech answer")
            if isinstance(error, VoxserveError):
                logger.error("speech stream failed: %s", told.message, exc_info=error.__cause__)
            if sse:
                yield sse_error(told)


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
                yield sse_piece(piece)
    yield sse_done(done())


def _events(pieces: list[Piece], done: Callable[[], dict[str, Any]]) -> bytes:
    """A whole answer's events, its audio cut into deltas of a bounded size."""
    events = []
    for piece in pieces:
        if isinstance(piece, bytes):
            events.extend(sse_piece(part) for part in sse_cut(piece))
        elif piece:
            events.append(sse_piece(piece))
    return b"".join([*events, sse_done(done())])


def usage(characters: int) -> dict[str, Any]:
    """OpenAI's usage block; voxserve counts characters, as tokens mean nothing to its engines."""
    return {"usage": {"input_tokens": characters, "output_tokens": 0, "total_tokens": characters}}
