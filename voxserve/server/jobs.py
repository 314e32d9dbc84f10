"""``/v1/jobs``: audiobooks rendered in the background (longform/jobs.py), with their progress,
pause, resume, cancel, and the book and its chapters to download.

``POST /v1/jobs`` takes a multipart ``file`` (text, Markdown or EPUB) or JSON with ``input``
(text), and the speech fields (voice, model, speed, language), ``response_format`` (m4b, mp4,
mp3), ``document_format``, ``chapter_pattern`` and ``loudness`` (LUFS, or ``off``). The document
is read before the job is made, so a bad one is a 400 now, not a failed job later.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError

from voxserve.audio.music_bed import BedMixer, MusicBed
from voxserve.errors import ConflictError, InvalidRequestError, NotFoundError
from voxserve.longform.audiobook import DEFAULT_LOUDNESS
from voxserve.longform.book_file import BOOK_FORMATS
from voxserve.longform.chapters import read_document
from voxserve.longform.jobs import JobRunner
from voxserve.request import SpeechOptions
from voxserve.server.errors import validation_error
from voxserve.server.music_upload import MUSIC_FIELDS, music_bed
from voxserve.server.uploads import parse_json_object, read_body, read_files_form

router = APIRouter(prefix="/v1/jobs")
JOB_FIELDS = ("response_format", "document_format", "chapter_pattern", "loudness")
SPEECH_FIELDS = ("voice", "model", "speed", "language", "normalize", "sample_rate")
CONTENT_TYPES = {"m4b": "audio/mp4", "mp4": "audio/mp4", "mp3": "audio/mpeg"}


def _runner(request: Request) -> JobRunner:
    return request.app.state.jobs


@router.post("", status_code=202)
async def create_job(request: Request) -> JSONResponse:
    fields, filename, document, music = await _read_job(request)
    unknown = sorted(fields.keys() - {*JOB_FIELDS, *SPEECH_FIELDS, *MUSIC_FIELDS})
    if unknown:
        raise InvalidRequestError(
            f"unknown field {unknown[0]!r}; a job takes file (or input), "
            f"{', '.join(SPEECH_FIELDS + JOB_FIELDS)}",
            param=unknown[0],
        )
    options = _job_options(fields, music is not None)
    await asyncio.to_thread(
        read_document, document, filename, document_format=options["document_format"],
        chapter_pattern=options["chapter_pattern"],
    )  # fmt: skip
    if music is not None:  # a file that is no music is refused now, not when the book is done
        await asyncio.to_thread(BedMixer, music, MusicBed(**options["music"]), 22050)
    job = await _runner(request).submit(filename, document, options, music)
    return JSONResponse(job.to_dict(), status_code=202)


@router.get("")
async def list_jobs(request: Request) -> JSONResponse:
    jobs = await asyncio.to_thread(_runner(request).store.list)
    return JSONResponse({"object": "list", "data": [job.to_dict() for job in jobs]})


@router.get("/{job_id}")
async def get_job(request: Request, job_id: str) -> JSONResponse:
    job = await asyncio.to_thread(_runner(request).store.get, job_id)
    return JSONResponse(job.to_dict())


@router.get("/{job_id}/events")
async def job_events(request: Request, job_id: str) -> StreamingResponse:
    """Server-sent events: ``job`` with the job at each change, until it ends or is paused."""
    runner = _runner(request)
    await asyncio.to_thread(runner.store.get, job_id)  # 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        async for job in runner.events(job_id):
            yield f"event: job\ndata: {json.dumps(job.to_dict())}\n\n".encode()

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/{job_id}/pause")
async def pause_job(request: Request, job_id: str) -> JSONResponse:
    return JSONResponse((await _runner(request).pause(job_id)).to_dict())


@router.post("/{job_id}/resume")
async def resume_job(request: Request, job_id: str) -> JSONResponse:
    return JSONResponse((await _runner(request).resume(job_id)).to_dict())


@router.post("/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str) -> JSONResponse:
    return JSONResponse((await _runner(request).cancel(job_id)).to_dict())


@router.delete("/{job_id}")
async def delete_job(request: Request, job_id: str) -> JSONResponse:
    runner = _runner(request)
    job = await asyncio.to_thread(runner.store.get, job_id)
    if job.status in ("queued", "running"):
        await runner.cancel(job_id)
    await asyncio.to_thread(runner.store.delete, job_id)
    return JSONResponse({"id": job_id, "object": "job", "deleted": True})


@router.get("/{job_id}/audio")
async def job_audio(request: Request, job_id: str) -> FileResponse:
    runner = _runner(request)
    job = await asyncio.to_thread(runner.store.get, job_id)
    _check_done(job.status)
    file_format = job.options["response_format"]
    path = runner.store.directory(job_id) / f"book.{file_format}"
    return FileResponse(path, media_type=CONTENT_TYPES[file_format],
                        filename=f"{_stem(job.filename)}.{file_format}")  # fmt: skip


@router.get("/{job_id}/chapters/{number}/audio")
async def chapter_audio(request: Request, job_id: str, number: int) -> FileResponse:
    """A chapter's file, there as soon as the chapter is done (before the book is)."""
    runner = _runner(request)
    job = await asyncio.to_thread(runner.store.get, job_id)
    file_format = job.options["response_format"]
    if any(chapter["number"] == number for chapter in job.chapters):
        path = await asyncio.to_thread(runner.store.chapter_file, job_id, number)
        if path is not None:
            return FileResponse(path, media_type=CONTENT_TYPES[file_format], filename=path.name)
    chapters_total = job.progress.get("chapters_total")
    if job.status in ("done", "cancelled") or not 1 <= number <= (chapters_total or number):
        raise NotFoundError(f"the job has no chapter {number}", param="number")
    raise ConflictError(
        f"the job is {job.status}: chapter {number} is there once it is made", code="job_not_done"
    )


def _check_done(status: str) -> None:
    if status != "done":
        raise ConflictError(
            f"the job is {status}: its audio is there once it is done", code="job_not_done"
        )


async def _read_job(request: Request) -> tuple[dict[str, Any], str, bytes, bytes | None]:
    """The fields, the document's file name and its bytes, and the music bed's file if any."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        fields, files = await read_files_form(request, "file", "music", max_files=2)
        uploads = {upload.field: upload for upload in files}
        if "file" not in uploads or len(uploads) < len(files):
            raise InvalidRequestError("file is required, once: the document to read", param="file")
        music = uploads["music"].data if "music" in uploads else None
        return dict(fields), uploads["file"].filename or "document.txt", uploads["file"].data, music
    body = await read_body(request, request.app.state.settings.max_input_chars * 64)
    fields = parse_json_object(body)
    text = fields.pop("input", None)
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError("input is required: the text to read (or a multipart file)",
                                  param="input")  # fmt: skip
    return fields, "input.txt", text.encode(), None


def _job_options(fields: dict[str, Any], has_music: bool) -> dict[str, Any]:
    speech = {key: fields[key] for key in SPEECH_FIELDS if key in fields}
    bed = music_bed(fields, has_music)
    try:
        speech_options = SpeechOptions.model_validate(speech)
    except ValidationError as error:
        raise validation_error(error) from error
    file_format = fields.get("response_format", "m4b")
    if file_format not in BOOK_FORMATS:
        raise InvalidRequestError(
            f"response_format should be one of {', '.join(BOOK_FORMATS)} for a book",
            param="response_format",
        )
    return {
        "speech": speech_options.model_dump(exclude_defaults=True),
        "response_format": file_format,
        "document_format": fields.get("document_format") or None,
        "chapter_pattern": fields.get("chapter_pattern") or None,
        "loudness": _loudness(fields.get("loudness", DEFAULT_LOUDNESS)),
        "music": None if bed is None else bed.model_dump(),
    }


def _loudness(value: Any) -> float | None:
    if value in ("off", None):
        return None
    try:
        loudness = float(value)
    except (TypeError, ValueError):
        loudness = float("nan")
    if not -40 <= loudness <= -5:
        raise InvalidRequestError(
            f"loudness should be LUFS from -40 to -5, or off, not {value!r}", param="loudness"
        )
    return loudness


def _stem(filename: str) -> str:
    return filename.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "book"
