"""``POST /dev/captioned_speech``: Kokoro-FastAPI's route for audio with word timestamps, so its
clients work unchanged against voxserve.

Kokoro-FastAPI (remsky/Kokoro-FastAPI, ``api/src/routers/development.py``) takes the speech
fields plus ``return_timestamps`` (default true), ``stream`` (default true), ``lang_code`` and
``normalization_options``, and answers JSON: streamed, one compact object a line
(``{"audio": base64, "audio_format": "audio/mpeg", "timestamps": [{"word", "start_time",
"end_time"}]}``), each line's words those heard up to the end of its audio; whole, one such
object. voxserve's words are the synthesizer's (native, or aligned for engines that time none),
in the stream's time. ``return_download_link`` is not supported: it is named in
``X-Ignored-Fields``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from voxserve.request import SpeechRequest
from voxserve.server.auth import charge_characters
from voxserve.server.errors import validation_error
from voxserve.server.openai import speech_headers, with_openai_defaults
from voxserve.server.speech_response import streaming_answer
from voxserve.server.spending import check_budget
from voxserve.server.uploads import parse_json_object, read_body
from voxserve.streaming import Words, audio_of, check_word_timings, encode_stream, whole, words_of
from voxserve.synthesis.synthesizer import Synthesizer

router = APIRouter()

AUDIO_FORMATS = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
"""``audio_format`` as Kokoro-FastAPI names each format (a content type, without parameters)."""


class NormalizationOptions(BaseModel):
    """Kokoro-FastAPI's text normalization switches: only ``normalize`` has a voxserve meaning
    (its finer switches are one normalizer here)."""

    model_config = ConfigDict(extra="ignore")
    normalize: bool = True


class CaptionedSpeechRequest(SpeechRequest):
    """Kokoro-FastAPI's ``CaptionedSpeechRequest`` over voxserve's speech fields."""

    return_timestamps: bool = True
    return_download_link: bool = False
    normalization_options: NormalizationOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _as_speech(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # Words for every chunk are what this route is for: asked of the synthesizer as
        # ``timestamps`` (aligned where the engine times none), unless the client opts out.
        data = {**data, "timestamps": data.get("return_timestamps", True)}
        options = data.get("normalization_options")
        if isinstance(options, dict) and "normalize" in options:
            data["normalize"] = options["normalize"]
        return data


@router.post("/dev/captioned_speech")
async def captioned_speech(request: Request) -> Response:
    synthesizer: Synthesizer = request.app.state.synthesizer
    body = await read_body(request, synthesizer.settings.max_input_chars)
    try:
        speech = CaptionedSpeechRequest.model_validate(parse_json_object(body))
    except ValidationError as error:
        raise validation_error(error) from error
    speech = with_openai_defaults(speech)
    charge_characters(len(speech.input))
    prepared = await asyncio.to_thread(synthesizer.prepare, speech)
    check_budget(request.app, prepared.segments)
    if speech.return_timestamps:
        check_word_timings([prepared.voicing], synthesizer.aligner, "return_timestamps")
    headers = speech_headers(prepared)
    if speech.return_download_link:
        ignored = headers.get("X-Ignored-Fields")
        headers["X-Ignored-Fields"] = ", ".join(filter(None, [ignored, "return_download_link"]))
    pieces = encode_stream(
        synthesizer.stream(prepared), speech.response_format, prepared.sample_rate
    )
    audio_format = AUDIO_FORMATS[speech.response_format]
    if not speech.stream:
        made = await whole(pieces, speech.response_format)
        line = caption_line(audio_of(made), audio_format, words_of(made))
        return JSONResponse(line, headers=headers)
    return await streaming_answer(
        _lines(pieces, audio_format), "application/json", headers, sse=False
    )


def caption_line(audio: bytes, audio_format: str, words: Any) -> dict[str, Any]:
    """One answer object: the audio in base64, its format, the words heard in it."""
    return {
        "audio": base64.b64encode(audio).decode(),
        "audio_format": audio_format,
        "timestamps": [
            {"word": w.text, "start_time": round(w.start, 3), "end_time": round(w.end, 3)}
            for w in words
        ],
    }


async def _lines(pieces: AsyncIterator[bytes | Words], audio_format: str) -> AsyncIterator[bytes]:
    """A line per piece of audio, with the words that came before it (words always come before
    their audio: `voxserve.streaming.encode_stream`); words after the last audio end the
    stream in a line of their own."""
    words: list = []
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            if isinstance(piece, Words):
                words.extend(piece.words)
            elif piece:
                yield _line(caption_line(piece, audio_format, words))
                words = []
    if words:
        yield _line(caption_line(b"", audio_format, words))


def _line(content: dict[str, Any]) -> bytes:
    """Kokoro-FastAPI's ``JSONStreamingResponse.render``: compact JSON and a newline."""
    return (json.dumps(content, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
