"""OpenAI-compatible routes: speech, models, voices, health."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from voxserve import __version__
from voxserve.config import Settings
from voxserve.engines.registry import OPENAI_MODEL_NAMES, engine_class
from voxserve.request import SpeechRequest
from voxserve.server.auth import charge_characters
from voxserve.server.dialogue import speech_as_dialogue
from voxserve.server.errors import validation_error
from voxserve.server.speech_response import check_timestamps, ignored_header, speech_response, usage
from voxserve.server.spending import check_budget
from voxserve.server.uploads import parse_json_object, read_audio_form, read_body
from voxserve.streaming import check_word_timings, encode_stream
from voxserve.synthesis.synthesizer import PreparedSpeech, Synthesizer
from voxserve.text.dialogue import is_dialogue
from voxserve.voices.resolution import CloneReference

logger = logging.getLogger("voxserve.server")
router = APIRouter()


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
    resolver = synthesizer.resolver
    resolver.cloning_engine(speech.model, "a voice clip")  # refuse before any audio work
    return speech, await asyncio.to_thread(resolver.clone_reference, clip, reference_text)


def parse_speech_request(body: bytes) -> SpeechRequest:
    try:
        return SpeechRequest.model_validate(parse_json_object(body))
    except ValidationError as error:
        raise validation_error(error) from error


PCM_SAMPLE_RATE = 24_000
"""OpenAI's ``pcm`` is 24 kHz, and its clients (pipecat, LiveKit, ...) play it at that rate
without reading the content type, so ``pcm`` here is resampled to it unless ``sample_rate`` says
otherwise. The other formats carry their rate, and keep the engine's."""


def with_openai_defaults(speech: SpeechRequest) -> SpeechRequest:
    if speech.response_format == "pcm" and speech.sample_rate is None:
        return speech.model_copy(update={"sample_rate": PCM_SAMPLE_RATE})
    return speech


def speech_headers(prepared: PreparedSpeech) -> dict[str, str]:
    headers = {
        "X-Sample-Rate": str(prepared.sample_rate),
        "X-Engine": prepared.engine.name,
        "X-Voice": prepared.voicing.voice.id,  # the one spoken: language_mismatch may pick it
    }
    return headers | ignored_header(prepared.ignored)


async def read_speech(
    request: Request, synthesizer: Synthesizer
) -> tuple[SpeechRequest, CloneReference | None]:
    """The body of a speech request (JSON or multipart), checked, with OpenAI's defaults."""
    reference = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        speech, reference = await parse_speech_form(request, synthesizer)
    else:
        body = await read_body(request, synthesizer.settings.max_input_chars)
        speech = parse_speech_request(body)
    speech = with_openai_defaults(speech)
    check_timestamps(speech)
    return speech, reference


def speaks_dialogue(speech: SpeechRequest, settings: Settings) -> bool:
    """Whether a speech request's input is a dialogue script, spoken as a dialogue."""
    return settings.dialogue_in_speech and is_dialogue(speech.input, settings.dialogue_delimiter)


@router.post("/v1/audio/speech")
async def create_speech(request: Request) -> Response:
    synthesizer: Synthesizer = request.app.state.synthesizer
    speech, reference = await read_speech(request, synthesizer)
    if speaks_dialogue(speech, synthesizer.settings):
        return await speech_as_dialogue(request, speech)
    charge_characters(len(speech.input))
    # In a thread: a profile lookup in SQLite, a clip path read and transcribed, normalizing.
    prepared = await asyncio.to_thread(synthesizer.prepare, speech, reference)
    check_budget(request.app, prepared.segments)
    if speech.wants_words:
        check_word_timings([prepared.voicing], synthesizer.aligner, speech.words_field)
    return await speech_response(
        encode_stream(synthesizer.stream(prepared), speech.response_format, prepared.sample_rate),
        request=request,
        audio_format=speech.response_format,
        sample_rate=prepared.sample_rate,
        sse=speech.stream_format == "sse",
        streamed=speech.stream,
        headers=speech_headers(prepared),
        done=lambda: usage(len(speech.input)),
        timestamps=speech.timestamps,
        captions=speech.captions,
    )


def model_entries(synthesizer: Synthesizer) -> list[dict[str, Any]]:
    """Every engine (installed or not, with its capabilities), then OpenAI's names for the
    default engine."""
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
    return models


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": model_entries(request.app.state.synthesizer)})


@router.get("/v1/audio/models")
async def list_speech_models(request: Request) -> JSONResponse:
    """The speech models in the shape of ``/v1/audio/voices`` (as OpenAI-style TTS servers and
    their clients list them)."""
    return JSONResponse({"models": model_entries(request.app.state.synthesizer)})


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
