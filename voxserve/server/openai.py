"""OpenAI-compatible routes: speech, models, voices, health."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from voxserve import __version__
from voxserve.audio import AUDIO_FORMATS, fix_wav_header
from voxserve.engines.registry import OPENAI_MODEL_NAMES, engine_class
from voxserve.errors import InvalidRequestError, PayloadTooLargeError, VoxserveError
from voxserve.request import SpeechRequest
from voxserve.server.errors import validation_error
from voxserve.server.uploads import read_audio_form
from voxserve.synthesis.synthesizer import CloneReference, Synthesizer
from voxserve.text.dialogue import is_dialogue

logger = logging.getLogger("voxserve.server")
router = APIRouter()


async def read_body(request: Request, max_chars: int) -> bytes:
    """The request body, refused as soon as it outgrows what a valid request could need."""
    limit = 64 * 1024 + 4 * max_chars  # UTF-8 needs at most 4 bytes a character, plus JSON fields
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is over {limit} bytes", code="body_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body is over {limit} bytes", code="body_too_large")
    return bytes(body)


async def parse_speech_form(
    request: Request, synthesizer: Synthesizer
) -> tuple[SpeechRequest, CloneReference | None]:
    """The multipart variant: the fields as form fields, and ``voice`` may be a clip to clone
    (with an optional ``reference_text``, else it is transcribed)."""
    fields, clip = await read_audio_form(request, "voice")
    reference_text = fields.pop("reference_text", None)
    try:
        speech = SpeechRequest.model_validate(fields)
    except ValidationError as error:
        raise validation_error(error) from error
    if clip is None:
        return speech, None
    synthesizer.cloning_engine(speech.model, "a voice clip")  # refuse before any audio work
    return speech, await asyncio.to_thread(synthesizer.clone_reference, clip, reference_text)


def parse_speech_request(body: bytes) -> SpeechRequest:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidRequestError(
            f"request body is not valid UTF-8 (byte {error.start})", code="invalid_utf8"
        ) from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidRequestError(
            f"request body is not valid JSON: {error.msg} at line {error.lineno} column "
            f"{error.colno}",
            code="invalid_json",
        ) from error
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object", code="invalid_json")
    try:
        return SpeechRequest.model_validate(data)
    except ValidationError as error:
        raise validation_error(error) from error


def content_type(audio_format: str, sample_rate: int) -> str:
    if audio_format == "pcm":
        return f"audio/pcm;rate={sample_rate};channels=1;encoding=s16le"
    return AUDIO_FORMATS[audio_format]


@router.post("/v1/audio/speech")
async def create_speech(request: Request) -> Response:
    synthesizer: Synthesizer = request.app.state.synthesizer
    settings = synthesizer.settings
    reference = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        speech, reference = await parse_speech_form(request, synthesizer)
    else:
        speech = parse_speech_request(await read_body(request, settings.max_input_chars))
    if settings.dialogue_in_speech and is_dialogue(speech.input, settings.dialogue_delimiter):
        from voxserve.server.dialogue import speech_as_dialogue

        return await speech_as_dialogue(request, speech)
    prepared = synthesizer.prepare(speech, reference)
    headers = {"X-Sample-Rate": str(prepared.sample_rate), "X-Engine": prepared.engine.name}
    media_type = content_type(speech.response_format, prepared.sample_rate)
    if not speech.stream:
        audio = b"".join([data async for data in synthesizer.stream_encoded(prepared)])
        if speech.response_format == "wav":
            audio = fix_wav_header(audio)
        return Response(audio, media_type=media_type, headers=headers)
    # The first audio is made before answering, so being busy (429), a load failure or an engine
    # failure is a proper status rather than a broken stream; it costs no latency, since the
    # headers would otherwise only be followed by that same first audio.
    stream = synthesizer.stream_encoded(prepared)
    try:
        first = await anext(stream, b"")
    except BaseException:
        await stream.aclose()
        raise
    if speech.stream_format == "sse":
        events = _sse_events(first, stream, len(speech.input))
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    return StreamingResponse(
        audio_after_first(first, stream), media_type=media_type, headers=headers
    )


async def audio_after_first(first: bytes, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """An encoded stream whose first piece was made before the response started."""
    async with contextlib.aclosing(stream):
        try:
            yield first
            async for data in stream:
                yield data
        except VoxserveError as error:
            # Headers are gone already: end the stream early and say why in the log.
            logger.error("speech stream failed: %s", error.message, exc_info=error.__cause__)


async def _sse_events(
    first: bytes, stream: AsyncIterator[bytes], characters: int
) -> AsyncIterator[bytes]:
    """OpenAI's ``speech.audio.delta`` / ``speech.audio.done`` events, audio base64-encoded."""
    async with contextlib.aclosing(stream):
        try:
            yield sse_delta(first)
            async for data in stream:
                yield sse_delta(data)
        except VoxserveError as error:
            yield sse_event({"type": "error", **error.to_dict()})
            return
    usage = {"input_tokens": characters, "output_tokens": 0, "total_tokens": characters}
    yield sse_event({"type": "speech.audio.done", "usage": usage})


def sse_delta(audio: bytes) -> bytes:
    return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode()})


def sse_event(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    synthesizer: Synthesizer = request.app.state.synthesizer
    registry = synthesizer.registry
    models = []
    for name in registry.names():
        entry = {"id": name, "object": "model", "owned_by": "voxserve", "installed": False}
        if registry.is_installed(name):
            engine = registry.get(name)
            entry.update(
                installed=True,
                loaded=registry.is_loaded(name),
                capabilities=engine.capabilities.to_dict(),
            )
        else:
            entry["extra"] = engine_class(name).extra
        models.append(entry)
    default = synthesizer.settings.default_engine
    for alias in OPENAI_MODEL_NAMES:
        models.append({"id": alias, "object": "model", "owned_by": "voxserve", "engine": default})
    return JSONResponse({"object": "list", "data": models})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    body = generate_latest(request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    synthesizer: Synthesizer = request.app.state.synthesizer
    stats = synthesizer.stats
    return JSONResponse(
        {
            "status": "ok",
            "version": __version__,
            "loaded_engines": synthesizer.registry.loaded_names(),
            "active_syntheses": stats.active,
            "segments_synthesized": stats.segments,
        }
    )
