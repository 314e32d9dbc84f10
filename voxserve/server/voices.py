"""``/v1/audio/voices``: built-in and profile voices together; profiles made from uploads.

Creating is compatible with OpenAI's custom voices where they overlap (multipart ``name`` and
``audio_sample``); the other fields are voxserve's. A profile's id works as ``voice`` everywhere.
The library's admin operations (import, export, backup, restore) are here too, for admin keys;
their work is in voice_admin.py.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from voxserve.engines.base import Voice
from voxserve.errors import InvalidRequestError, NotFoundError
from voxserve.request import SpeechRequest
from voxserve.server import voice_admin
from voxserve.server.uploads import (
    parse_json,
    parse_json_object,
    read_audio_form,
    read_files_form,
    read_limited,
)
from voxserve.streaming import encode_whole
from voxserve.synthesis.synthesizer import Synthesizer
from voxserve.voices.folder_import import ClipFile, import_clips
from voxserve.voices.library import VoiceLibrary
from voxserve.voices.profile import VoiceProfile

router = APIRouter(prefix="/v1/audio/voices")
ROUTE_WORDS = frozenset({"import", "import-folder", "backup", "backups", "restore", "combine"})
"""Paths beside ``/{voice_id}``: no profile may take one of these names."""
TEXT_FIELDS = (
    "display_name", "description", "language", "engine", "voice", "transcript",
    "speaker_description", "scene_prompt",
)  # fmt: skip
SAMPLE_TEXT = "Hello! This is how I sound. I hope you like my voice."
MAX_FOLDER_FILES = 200
MAX_FOLDER_BYTES = 500 * 2**20
"""A folder uploaded at once: its clips and transcripts, each at most an upload's size."""
MAX_JSON_BYTES = 256 * 2**10
"""A profile as JSON: its text fields hold about 11,000 characters, which JSON may write as
\\u escapes of six bytes, or twelve for a character beyond the BMP (an emoji)."""


def _library(request: Request) -> VoiceLibrary:
    return request.app.state.library


def engine_voice_json(voice: Voice) -> dict[str, Any]:
    return {
        "id": voice.id, "object": "voice", "type": "builtin", "name": voice.name,
        "engine": voice.engine, "language": voice.language, "languages": list(voice.speaks()),
        "description": voice.description,
    }  # fmt: skip


def profile_json(profile: VoiceProfile) -> dict[str, Any]:
    # "name" as every voice in the listing has it (OpenAI-style clients show it).
    return {"object": "voice", "type": "profile", "name": profile.display_name,
            **profile.model_dump()}  # fmt: skip


@router.get("")
async def list_voices(request: Request, tag: str | None = None) -> JSONResponse:
    synthesizer: Synthesizer = request.app.state.synthesizer
    voices = [] if tag else [engine_voice_json(v) for v in synthesizer.registry.all_voices()]
    profiles = await asyncio.to_thread(_library(request).store.list, tag)
    voices += [profile_json(profile) for profile in profiles]
    return JSONResponse({"voices": voices, "aliases": synthesizer.settings.voice_aliases})


@router.post("", status_code=201)
async def create_voice(request: Request) -> JSONResponse:
    fields, audio = await _read_fields(request)
    if "name" not in fields:
        raise InvalidRequestError("name is required", param="name", code="missing_name")
    fields["id"] = fields.pop("name")
    profile = await asyncio.to_thread(_library(request).create, fields, audio)
    return JSONResponse(profile_json(profile), status_code=201)


@router.post("/combine", status_code=201)
async def combine_voices(request: Request) -> JSONResponse:
    """Kokoro-FastAPI's voice combining, as a profile: ``voices``, a weighted mix
    (``"af_bella(2)+af_sky(1)"``) or its parts as a list, saved under ``name`` for the engine
    ``model`` names (the default engine without one), which must speak such a mix."""
    fields = await _json_object(request)
    voices, name, model = fields.get("voices"), fields.get("name"), fields.get("model")
    if isinstance(voices, list) and voices and all(isinstance(part, str) for part in voices):
        voices = "+".join(part.strip() for part in voices)
    if not isinstance(voices, str) or not voices.strip():
        raise InvalidRequestError(
            'voices must be a mix ("a(2)+b(1)") or a list of its parts', param="voices"
        )
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError("name is required", param="name", code="missing_name")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError("model must be an engine's name", param="model")
    profile_fields = {"id": name, "voice": voices.strip(), "description": f"a mix: {voices}"}
    if model:
        profile_fields["engine"] = model
    profile = await asyncio.to_thread(_library(request).create, profile_fields)
    return JSONResponse(profile_json(profile), status_code=201)


@router.post("/import-folder")
async def import_folder(request: Request) -> JSONResponse:
    """A folder's clips uploaded together (repeated ``files``; a browser's directory upload):
    a profile from each, named after its file, its transcript from the same-named ``.txt``.
    ``tags``, ``engine`` and ``language`` go to every profile; ``replace`` replaces profiles of
    the same names. 200 with a result per file: bad clips are reported, the rest made."""
    fields, uploaded = await read_files_form(
        request, "files", max_files=MAX_FOLDER_FILES, max_total_bytes=MAX_FOLDER_BYTES
    )
    unknown = fields.keys() - {"tags", "engine", "language", "replace"}
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidRequestError(
            f"unknown field {field!r}; this takes files, tags, engine, language and replace",
            param=field,
        )
    if not uploaded:
        raise InvalidRequestError("files is required: the folder's clips", param="files")
    replace = voice_admin.flag("replace", fields.pop("replace", "false"))
    if "tags" in fields:
        fields["tags"] = [tag.strip() for tag in fields["tags"].split(",") if tag.strip()]
    # A directory upload names files by their path in it ("voices/ada.wav"): the name is last.
    files = [
        ClipFile(PurePath(upload.filename).name, lambda data=upload.data: data)
        for upload in uploaded
    ]
    results = await asyncio.to_thread(
        import_clips, _library(request), files, fields=fields, replace=replace
    )
    return JSONResponse({"results": [result.to_dict() for result in results]})


# Admin routes first: "/{voice_id}" would take "backups" for a voice's id.


@router.post("/import", status_code=201)
async def import_voice(request: Request) -> JSONResponse:
    package, replace = await voice_admin.read_package_form(request)
    library = _library(request)
    profile = await asyncio.to_thread(voice_admin.import_package, library, package, replace)
    return JSONResponse(profile_json(profile), status_code=201)


@router.post("/backup", status_code=201)
async def backup_voices(request: Request) -> JSONResponse:
    backup = await asyncio.to_thread(voice_admin.take_backup, _library(request).store)
    return JSONResponse(backup, status_code=201)


@router.get("/backups")
async def list_backups(request: Request) -> JSONResponse:
    backups = await asyncio.to_thread(voice_admin.list_backups, _library(request).store)
    return JSONResponse({"backups": backups})


@router.post("/restore")
async def restore_voices(request: Request) -> JSONResponse:
    name = voice_admin.backup_name(await _json_object(request))
    restored = await asyncio.to_thread(voice_admin.restore, _library(request).store, name)
    return JSONResponse({"backup": restored, "restored": True})


@router.get("/{voice_id}/export")
async def export_voice(request: Request, voice_id: str) -> Response:
    store = _library(request).store
    name, package = await asyncio.to_thread(voice_admin.export_package, store, voice_id)
    disposition = f'attachment; filename="{name}"'  # a profile id: no quotes or slashes in it
    return Response(package, media_type="application/zip",
                    headers={"Content-Disposition": disposition})  # fmt: skip


@router.get("/{voice_id}")
async def get_voice(request: Request, voice_id: str) -> JSONResponse:
    profile = await asyncio.to_thread(_library(request).store.find, voice_id)
    if profile is not None:
        return JSONResponse(profile_json(profile))
    return JSONResponse(engine_voice_json(_engine_voice(request, voice_id)))


@router.patch("/{voice_id}")
async def update_voice(request: Request, voice_id: str) -> JSONResponse:
    fields, audio = await _read_fields(request)
    profile = await asyncio.to_thread(_library(request).update, voice_id, fields, audio)
    return JSONResponse(profile_json(profile))


@router.delete("/{voice_id}")
async def delete_voice(request: Request, voice_id: str) -> JSONResponse:
    await asyncio.to_thread(_library(request).store.delete, voice_id)
    return JSONResponse({"id": voice_id, "object": "voice", "deleted": True})


@router.get("/{voice_id}/sample")
async def voice_sample(request: Request, voice_id: str) -> Response:
    """A profile's reference audio; for other voices, a short sentence spoken in them."""
    library = _library(request)
    profile = await asyncio.to_thread(library.store.find, voice_id)
    if profile is not None and profile.has_reference:
        return FileResponse(library.store.reference_path(profile.id), media_type="audio/wav")
    if profile is None:
        _engine_voice(request, voice_id)
    synthesizer: Synthesizer = request.app.state.synthesizer
    speech = SpeechRequest(input=SAMPLE_TEXT, voice=voice_id, response_format="wav")
    prepared = await asyncio.to_thread(synthesizer.prepare, speech)
    encoded = await encode_whole(synthesizer.stream(prepared), "wav", prepared.sample_rate)
    return Response(encoded.audio, media_type="audio/wav")


def _engine_voice(request: Request, voice_id: str) -> Voice:
    for voice in request.app.state.synthesizer.registry.all_voices():
        if voice.id == voice_id:
            return voice
    raise NotFoundError(f"no voice {voice_id!r}", param="voice_id", code="voice_not_found")


async def _read_fields(request: Request) -> tuple[dict[str, Any], bytes | None]:
    """Fields and audio from a multipart form, or fields from a JSON body."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _json_object(request), None
    form, audio = await read_audio_form(request, "audio_sample")
    fields: dict[str, Any] = {}
    for key, value in form.items():
        if key == "name":
            fields["name"] = value
        elif key == "display":
            fields["display_name"] = value
        elif key in TEXT_FIELDS:
            fields[key] = value
        elif key == "tags":
            fields["tags"] = _list_field(value)
        elif key in ("defaults", "engine_options"):
            fields[key] = parse_json(value, key, param=key)
        else:
            raise InvalidRequestError(f"unknown field {key!r}", param=key, code="unknown_field")
    return fields, audio


async def _json_object(request: Request) -> dict[str, Any]:
    """A JSON object body, refused (413) as soon as it outgrows a profile; an empty body is an
    empty object."""
    body = await read_limited(request, MAX_JSON_BYTES)
    return parse_json_object(body) if body.strip() else {}


def _list_field(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        return parse_json(value, "tags", param="tags")
    return [part for part in (piece.strip() for piece in value.split(",")) if part]
