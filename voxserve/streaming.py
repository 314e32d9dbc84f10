"""The edge every transport shares: a stream of audio encoded, its words and its errors told.

HTTP (whole, streamed, SSE), the WebSockets, the library, the CLI and the RunPod worker read the
synthesizer's chunks through here and keep only their own framing:

- ``encode_stream``: chunks -> encoded bytes, incrementally, with each chunk's ``Words`` just
  before the bytes that carry them; other items (segment or turn timings) pass through in place.
- ``whole``/``encode_whole``: an answer made in full, a WAV with its real sizes.
- ``sse_*``: OpenAI's SSE events (``speech.audio.delta``, ``speech.audio.done``), voxserve's
  ``speech.audio.words``, and the error event.
- ``check_word_timings``: timestamps asked of an engine that times no words, where they cannot
  be aligned either, are a 400.
- ``client_error``: any exception -> what a client is told (``ClientError``), one mapping that
  HTTP, the WebSocket protocols and the SSE error event only shape.

It sits beside ``errors.py`` rather than in ``server/``: the voice chat (``chat/``, which
``server/`` imports) and the library (``api.py``, under the CLI) use it too, and an import of
``server/`` from them would run back up the layers. It imports nothing of the web framework.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from voxserve.audio import AudioEncoder, create_encoder, fix_wav_header
from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.errors import (
    InvalidRequestError,
    RateLimitedError,
    UpstreamRateLimitedError,
    VoxserveError,
    as_client_error,
)

if TYPE_CHECKING:
    from voxserve.engines.base import Voicing
    from voxserve.synthesis.word_alignment import WordAligner

T = TypeVar("T")

SSE_DELTA_BYTES = 48 * 1024
"""Audio per ``speech.audio.delta`` event when a whole answer is cut into events."""


@dataclass(frozen=True)
class Words:
    """Words about to be heard, in the stream's own time: sent before the audio that holds them."""

    words: tuple[WordTiming, ...]

    def to_list(self) -> list[dict[str, Any]]:
        return [word.to_dict() for word in self.words]


def check_word_timings(
    voicings: Iterable[Voicing], aligner: WordAligner | None, param: str = "timestamps"
) -> None:
    """Words asked of an engine that times none are aligned to its audio (``aligner``; None
    where a transport cannot have them aligned); where that is impossible too (an extra not
    installed) they are refused (400), rather than answered with an empty list. (SSE and
    WebSocket clients, who do not ask, get words where there are some.)"""
    for voicing in voicings:
        engine = voicing.engine
        if engine.capabilities.word_timings:
            continue
        why = "no aligner" if aligner is None else aligner.unavailable(voicing.language)
        if why is not None:
            raise InvalidRequestError(
                f"{param}: engine {engine.name!r} does not time its words, and {why}",
                param=param,
                code="word_timings_not_supported",
            )


# Encoding


async def encode_stream(
    items: AsyncIterator[AudioChunk | T], audio_format: str, sample_rate: int
) -> AsyncIterator[bytes | Words | T]:
    """Each chunk's words (when it has any), then the bytes its encoding gave (a codec may hold
    some back: they come with a later chunk, after their words either way); any other item in
    its place; the encoder's tail last. Compressed formats encode in a worker thread."""
    encoder = create_encoder(audio_format, sample_rate)
    async with contextlib.aclosing(items):
        async for item in items:
            if not isinstance(item, AudioChunk):
                yield item
                continue
            if item.words:
                yield Words(item.words)
            if data := await encode(encoder, item.samples):
                yield data
    if tail := encoder.finish():
        yield tail


async def encode_chunks(
    chunks: AsyncIterator[AudioChunk], audio_format: str, sample_rate: int
) -> AsyncIterator[bytes]:
    """Only the encoded audio of ``chunks``, as it comes (a file, standard output)."""
    async with contextlib.aclosing(encode_stream(chunks, audio_format, sample_rate)) as pieces:
        async for piece in pieces:
            if isinstance(piece, bytes):
                yield piece


async def encode(encoder: AudioEncoder, samples: np.ndarray) -> bytes:
    if encoder.format in ("pcm", "wav"):  # raw PCM costs microseconds
        return encoder.encode(samples)
    return await asyncio.to_thread(encoder.encode, samples)


# Whole answers


def whole_audio(audio_format: str, audio: bytes) -> bytes:
    """A complete answer's audio: a WAV gets its real sizes (a streamed one says "unknown"), which
    Python's ``wave`` and some players need."""
    return fix_wav_header(audio) if audio_format == "wav" and audio else audio


async def whole(pieces: AsyncIterator[bytes | T], audio_format: str) -> list[bytes | T]:
    """Every piece, in order, a WAV's header fixed (only its sizes change, so the audio goes
    back between the other pieces where it was)."""
    async with contextlib.aclosing(pieces):
        collected = [piece async for piece in pieces]
    audio = whole_audio(audio_format, b"".join(p for p in collected if isinstance(p, bytes)))
    fixed: list[bytes | T] = []
    offset = 0
    for piece in collected:
        if isinstance(piece, bytes):
            piece, offset = audio[offset : offset + len(piece)], offset + len(piece)
        fixed.append(piece)
    return fixed


@dataclass(frozen=True)
class Encoded:
    """A whole answer: its audio, the words spoken in it, and its length."""

    audio: bytes
    words: tuple[WordTiming, ...]
    seconds: float


async def encode_whole(
    chunks: AsyncIterator[AudioChunk], audio_format: str, sample_rate: int
) -> Encoded:
    """Every chunk encoded into one answer (``/ws/tts``, the RunPod worker, a voice's sample)."""
    seconds = 0.0

    async def counted() -> AsyncIterator[AudioChunk]:
        nonlocal seconds
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                seconds += chunk.duration
                yield chunk

    pieces = await whole(encode_stream(counted(), audio_format, sample_rate), audio_format)
    return Encoded(audio_of(pieces), words_of(pieces), seconds)


def audio_of(pieces: Iterable[object]) -> bytes:
    return b"".join(piece for piece in pieces if isinstance(piece, bytes))


def words_of(pieces: Iterable[object]) -> tuple[WordTiming, ...]:
    return tuple(word for piece in pieces if isinstance(piece, Words) for word in piece.words)


# OpenAI's SSE events


def sse_event(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def sse_audio(audio: bytes) -> bytes:
    return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode()})


def sse_words(words: Words) -> bytes:
    """voxserve's own event type; OpenAI's clients skip types they do not know."""
    return sse_event({"type": "speech.audio.words", "words": words.to_list()})


def sse_done(fields: dict[str, Any]) -> bytes:
    return sse_event({"type": "speech.audio.done", **fields})


def sse_error(told: ClientError) -> bytes:
    return sse_event({"type": "error", **told.body()})


def sse_piece(piece: bytes | Words | dict[str, Any]) -> bytes:
    """One event: audio, words, or an event of the caller's own (a dialogue's turn)."""
    if isinstance(piece, bytes):
        return sse_audio(piece)
    if isinstance(piece, Words):
        return sse_words(piece)
    return sse_event(piece)


def sse_cut(audio: bytes) -> list[bytes]:
    """A whole answer's audio in parts of at most ``SSE_DELTA_BYTES``, one event each."""
    return [audio[at : at + SSE_DELTA_BYTES] for at in range(0, len(audio), SSE_DELTA_BYTES)]


# Errors


@dataclass(frozen=True)
class ClientError:
    """What a client is told of a failure; each transport gives it its own shape (HTTP: OpenAI's
    body, status and retry headers; WebSockets: an error message; SSE: an error event)."""

    status: int
    type: str
    """OpenAI's error type (``invalid_request_error``, ``server_error``...)."""
    code: str | None
    message: str
    param: str | None = None
    retry_after: int | None = None
    """Seconds to wait before trying again (429)."""

    @classmethod
    def of(cls, error: VoxserveError) -> ClientError:
        retry_after = None
        if isinstance(error, RateLimitedError):
            retry_after = error.retry_after
        elif isinstance(error, UpstreamRateLimitedError) and error.retry_after is not None:
            retry_after = max(1, math.ceil(error.retry_after))
        return cls(
            error.status_code, error.error_type, error.code, error.message, error.param,
            retry_after,
        )  # fmt: skip

    def body(self) -> dict[str, Any]:
        """OpenAI's error body."""
        fields = {"message": self.message, "type": self.type, "param": self.param}
        return {"error": {**fields, "code": self.code}}

    def ws_message(self, default_code: str | None = None) -> dict[str, Any]:
        """The error message of the chat and ``/v1/audio/speech/stream``; ``default_code`` for an
        error that has none of its own (each protocol documents its own)."""
        code = self.code or default_code
        return {"type": "error", "code": code, "message": self.message, "param": self.param}


def client_error(error: Exception, logger: logging.Logger, doing: str) -> ClientError:
    """What to tell a client of ``error``, raised while ``doing`` something for it: a
    VoxserveError as it is; anything else is a bug, logged with its traceback and told as
    ``internal_error`` (``errors.as_client_error``)."""
    return ClientError.of(as_client_error(error, logger, doing))
