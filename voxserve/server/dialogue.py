"""``POST /v1/audio/dialogue``, and dialogue scripts sent to ``/v1/audio/speech``.

The dialogue route also takes a form: the request's JSON in ``dialogue`` and a music bed's file
in ``music`` (with ``music_*`` settings), mixed under the turns as they stream.

Turn timings come as ``dialogue.turn`` events in SSE mode; with plain audio, the ``X-Timing-Url``
header names where they can be read (complete once the audio has ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from voxserve.audio import AudioChunk
from voxserve.audio.music_bed import BedMixer, MusicBed, under_speech
from voxserve.config import Settings
from voxserve.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from voxserve.request import DialogueRequest, SpeechRequest
from voxserve.server.auth import charge_characters
from voxserve.server.errors import validation_error
from voxserve.server.music_upload import MUSIC_FIELDS, music_bed
from voxserve.server.speech_response import (
    Piece,
    check_timestamps,
    ignored_header,
    speech_response,
    usage,
)
from voxserve.server.spending import check_budget
from voxserve.server.uploads import parse_json_object, read_body, read_files_form
from voxserve.streaming import check_word_timings, encode_stream
from voxserve.synthesis.dialogue import (
    PreparedDialogue,
    TurnTiming,
    prepare_dialogue,
    render_dialogue,
)
from voxserve.synthesis.synthesizer import Synthesizer
from voxserve.text.dialogue import parse_dialogue

router = APIRouter()
KEPT_TIMINGS = 256


async def read_dialogue(request: Request, settings: Settings) -> DialogueRequest:
    return _dialogue_of(await read_body(request, settings.max_dialogue_chars))


def _dialogue_of(body: bytes) -> DialogueRequest:
    try:
        dialogue = DialogueRequest.model_validate(parse_json_object(body))
    except ValidationError as error:
        raise validation_error(error) from error
    check_timestamps(dialogue)
    return dialogue


async def read_dialogue_form(
    request: Request, settings: Settings
) -> tuple[DialogueRequest, tuple[bytes, MusicBed] | None]:
    """A multipart dialogue: the request's JSON in the ``dialogue`` field, a music bed's file in
    ``music`` and its settings in ``music_*`` fields (the bed: None without a file)."""
    fields, files = await read_files_form(request, "music", max_files=1)
    unknown = sorted(fields.keys() - {"dialogue", *MUSIC_FIELDS})
    if unknown:
        raise InvalidRequestError(
            f"unknown field {unknown[0]!r}; a dialogue form takes dialogue (the request's "
            f"JSON), a music file and {', '.join(MUSIC_FIELDS)}",
            param=unknown[0],
        )
    if "dialogue" not in fields:
        raise InvalidRequestError("dialogue is required: the request's JSON", param="dialogue")
    if len(fields["dialogue"]) > 4 * settings.max_dialogue_chars:  # as read_body's bound
        raise PayloadTooLargeError(
            f"dialogue is over {4 * settings.max_dialogue_chars} characters of JSON",
            param="dialogue",
        )
    bed = music_bed(fields, bool(files))
    music = None if bed is None else (files[0].data, bed)
    return _dialogue_of(fields["dialogue"].encode()), music


@router.post("/v1/audio/dialogue")
async def create_dialogue(request: Request) -> Response:
    """A dialogue in JSON, or as a form with a music bed under it."""
    synthesizer: Synthesizer = request.app.state.synthesizer
    music = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        dialogue, music = await read_dialogue_form(request, synthesizer.settings)
    else:
        dialogue = await read_dialogue(request, synthesizer.settings)
    prepared = await asyncio.to_thread(prepare_dialogue, synthesizer, dialogue)
    mixer = None
    if music is not None:  # the file decoded before any speech is made
        mixer = await asyncio.to_thread(BedMixer, *music, prepared.sample_rate)
    return await dialogue_response(request, prepared, dialogue, mixer)


async def speech_as_dialogue(request: Request, speech: SpeechRequest) -> Response:
    """A speech request whose input is a dialogue script."""
    synthesizer: Synthesizer = request.app.state.synthesizer
    dialogue = script_as_dialogue(speech, synthesizer.settings)
    prepared = await asyncio.to_thread(prepare_dialogue, synthesizer, dialogue)
    return await dialogue_response(request, prepared, dialogue)


def script_as_dialogue(speech: SpeechRequest, settings: Settings) -> DialogueRequest:
    """The dialogue a speech request's script (its ``input``) stands for."""
    try:
        turns = parse_dialogue(speech.input, settings.dialogue_delimiter)
    except ValueError as error:
        raise InvalidRequestError(str(error), param="input", code="invalid_dialogue") from error
    try:
        dialogue = DialogueRequest.model_validate(
            {**speech.model_dump(exclude={"input"}),
             "turns": [{"speaker": turn.speaker, "text": turn.text} for turn in turns]}
        )  # fmt: skip
    except ValidationError as error:  # too many turns: the script is the client's "input"
        message = validation_error(error).message
        raise InvalidRequestError(
            f"input: {message}", param="input", code="invalid_dialogue"
        ) from error
    return dialogue


@router.get("/v1/audio/dialogue/{timing_id}/timing")
async def dialogue_timing(request: Request, timing_id: str) -> JSONResponse:
    timings = request.app.state.dialogue_timings.get(timing_id)
    if timings is None:
        raise NotFoundError(f"no dialogue timing {timing_id!r}", param="timing_id")
    return JSONResponse(timings)


async def dialogue_response(
    request: Request,
    dialogue: PreparedDialogue,
    options: DialogueRequest,
    music: BedMixer | None = None,
) -> Response:
    synthesizer: Synthesizer = request.app.state.synthesizer
    if options.wants_words:
        check_word_timings(
            (v for _, v in dialogue.turns), synthesizer.aligner, options.words_field
        )
    charge_characters(dialogue.characters)
    check_budget(request.app, [segment for plan in dialogue.plans for segment in plan])
    timing_id = uuid.uuid4().hex
    record = {"status": "in_progress", "sample_rate": dialogue.sample_rate, "turns": []}
    store: OrderedDict = request.app.state.dialogue_timings
    store[timing_id] = record
    while len(store) > KEPT_TIMINGS:
        store.popitem(last=False)
    headers = {
        "X-Sample-Rate": str(dialogue.sample_rate),
        "X-Timing-Url": f"/v1/audio/dialogue/{timing_id}/timing",
    } | ignored_header(dialogue.ignored)
    rendered = render_dialogue(synthesizer, dialogue)
    if music is not None:
        rendered = under_speech(rendered, music)
    return await speech_response(
        _pieces(rendered, dialogue, record),
        request=request,
        audio_format=dialogue.response_format,
        sample_rate=dialogue.sample_rate,
        sse=options.stream_format == "sse",
        streamed=options.stream,
        headers=headers,
        done=lambda: {**usage(dialogue.characters), "turns": record["turns"]},
        timestamps=options.timestamps,
        captions=options.captions,
    )


async def _pieces(
    items: AsyncIterator[AudioChunk | TurnTiming], dialogue: PreparedDialogue, record: dict
) -> AsyncIterator[Piece]:
    """The encoded audio with a ``dialogue.turn`` event after each turn; the timings recorded."""
    encoded = encode_stream(items, dialogue.response_format, dialogue.sample_rate)
    async with contextlib.aclosing(encoded) as pieces:
        async for piece in pieces:
            if isinstance(piece, TurnTiming):
                record["turns"].append(piece.to_dict())
                yield {"type": "dialogue.turn", **piece.to_dict()}
            else:
                yield piece
    record["status"] = "complete"
