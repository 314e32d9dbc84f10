"""Request bodies, refused as soon as they outgrow their limit: JSON bodies, and multipart forms
that carry one audio file (voice uploads, clips to clone) or several (a folder of clips)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.types import Message

from voxserve.errors import InvalidRequestError, PayloadTooLargeError
from voxserve.voices.reference import MAX_CLIP_BYTES

MAX_AUDIO_BYTES = MAX_CLIP_BYTES
"""An uploaded audio file: a reference clip (reference.py says how long one may be)."""
FORM_FIELDS_BYTES = 2**20
"""A form's text fields together, and each one: the longest, a dialogue or a transcript, needs
a small fraction of this."""


async def read_audio_form(request: Request, file_field: str) -> tuple[dict[str, str], bytes | None]:
    """The form's text fields, and the audio of ``file_field`` (the one file allowed)."""
    fields, files = await read_files_form(request, file_field, max_files=1)
    return fields, files[0].data if files else None


class Upload(NamedTuple):
    field: str
    filename: str
    data: bytes


async def read_files_form(
    request: Request, *file_fields: str, max_files: int, max_total_bytes: int = MAX_AUDIO_BYTES
) -> tuple[dict[str, str], list[Upload]]:
    """The form's text fields, and its files, which only ``file_fields`` may hold: at most
    ``max_files``, each at most MAX_AUDIO_BYTES and all together ``max_total_bytes``."""
    file_field = file_fields[0]
    too_large = PayloadTooLargeError(
        f"{file_field} is over {max_total_bytes // 2**20} MB", param=file_field,
        code="upload_too_large",
    )  # fmt: skip
    limit = max_total_bytes + FORM_FIELDS_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    # Counted as it arrives: a chunked body declares no length, and the form parser would spool
    # all of it to disk before the file's size could be checked.
    counted = capped(request, limit, too_large)
    form = await counted.form(max_files=max_files, max_fields=32, max_part_size=FORM_FIELDS_BYTES)
    fields: dict[str, str] = {}
    files: list[Upload] = []
    for key, value in form.multi_items():
        if not isinstance(value, UploadFile):
            fields[key] = value
        elif key not in file_fields:
            allowed = " or ".join(file_fields)
            raise InvalidRequestError(f"only {allowed} may be a file, not {key!r}", param=key)
        else:
            data = await value.read(MAX_AUDIO_BYTES + 1)
            if len(data) > MAX_AUDIO_BYTES:
                raise PayloadTooLargeError(
                    f"{key} {value.filename or ''} is over {MAX_AUDIO_BYTES // 2**20} MB",
                    param=key, code="upload_too_large",
                )  # fmt: skip
            files.append(Upload(key, value.filename or "", data))
    return fields, files


def capped(request: Request, limit: int, too_large: PayloadTooLargeError) -> Request:
    """``request`` whose body raises ``too_large`` as soon as more than ``limit`` bytes of it
    have arrived, whoever reads it."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise too_large
        return message

    return Request(request.scope, receive)


async def read_body(request: Request, max_chars: int) -> bytes:
    """The request body, refused as soon as it outgrows what a valid request could need."""
    # UTF-8 needs at most 4 bytes a character, plus the JSON fields around the text
    return await read_limited(request, 64 * 1024 + 4 * max_chars)


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it outgrows ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is over {limit} bytes", code="body_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body is over {limit} bytes", code="body_too_large")
    return bytes(body)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object: every way it can be wrong is a 400."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidRequestError(
            f"request body is not valid UTF-8 (byte {error.start})", code="invalid_utf8"
        ) from error
    data = parse_json(text, "request body")
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object", code="invalid_json")
    return data


def parse_json(text: str, what: str, param: str | None = None) -> Any:
    """``text`` as JSON, or a 400 saying why not: ``what`` is the text (``request body``, a form
    field) and ``param`` its field, under which a number too long to read is named."""
    too_long: list[_TooLong] = []

    def integer(digits: str) -> int | str:
        try:
            return int(digits)
        except ValueError:  # more digits than Python converts (4300): named once parsed
            too_long.append(_TooLong(digits))
            return too_long[-1]

    try:
        data = json.loads(text, parse_int=integer)
    except json.JSONDecodeError as error:
        raise InvalidRequestError(
            f"{what} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
            param=param,
            code="invalid_json",
        ) from error
    except RecursionError as error:
        raise InvalidRequestError(
            f"{what} is nested too deeply", param=param, code="invalid_json"
        ) from error
    if too_long:
        field = _path_of_too_long(data, param)
        raise InvalidRequestError(
            f"{field or what} holds a number with too many digits to read",
            param=field,
            code="number_too_long",
        )
    return data


class _TooLong(str):
    """An integer too long to convert, kept as its digits to find where it was."""


def _path_of_too_long(data: Any, root: str | None) -> str | None:
    """The dotted path (``defaults.seed``, ``tags.0``) of a `_TooLong` in ``data``, below
    ``root``. A loop, not recursion: JSON nests deeper than Python's recursion limit."""
    pending: list[tuple[str | None, Any]] = [(root, data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, _TooLong):
            return path
        children: Iterable[tuple[Any, Any]]
        if isinstance(value, dict):
            children = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        pending.extend((f"{path}.{key}" if path else str(key), child) for key, child in children)
    return None


async def read_json_object(request: Request, limit_bytes: int) -> dict[str, Any]:
    """The body as one JSON object, refused (413) as soon as it outgrows ``limit_bytes``."""
    return parse_json_object(await read_limited(request, limit_bytes))
