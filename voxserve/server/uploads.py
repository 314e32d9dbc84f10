"""Request bodies, refused as soon as they outgrow their limit: JSON bodies, and multipart forms
that carry one audio file (voice uploads, clips to clone)."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile

from voxserve.errors import InvalidRequestError, PayloadTooLargeError

MAX_AUDIO_BYTES = 25 * 2**20


async def read_audio_form(request: Request, file_field: str) -> tuple[dict[str, str], bytes | None]:
    """The form's text fields, and the audio of ``file_field`` (the one file allowed)."""
    too_large = PayloadTooLargeError(
        f"{file_field} is over {MAX_AUDIO_BYTES // 2**20} MB", param=file_field,
        code="upload_too_large",
    )  # fmt: skip
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_AUDIO_BYTES + 2**20:
        raise too_large
    form = await request.form(max_files=1, max_fields=32, max_part_size=MAX_AUDIO_BYTES)
    fields: dict[str, str] = {}
    audio = None
    for key, value in form.multi_items():
        if not isinstance(value, UploadFile):
            fields[key] = value
        elif key != file_field:
            raise InvalidRequestError(f"only {file_field} may be a file, not {key!r}", param=key)
        else:
            audio = await value.read(MAX_AUDIO_BYTES + 1)
            if len(audio) > MAX_AUDIO_BYTES:
                raise too_large
    return fields, audio


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
