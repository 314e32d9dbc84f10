"""The voice library's admin operations over HTTP: packages in and out, backups by name.

The routes are in voices.py, and access control gives them to admin keys only (``ADMIN_ROUTES``
in auth.py). The functions here that touch files or SQLite block: call them in a thread.
Clients name a backup by its file name only; where it lies on the server is never told.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from fastapi import Request

from voxserve.errors import InvalidRequestError, NotFoundError
from voxserve.server.uploads import read_audio_form
from voxserve.voices.library import VoiceLibrary
from voxserve.voices.profile import VoiceProfile
from voxserve.voices.store import VoiceStore, storage_errors

"""A package is one reference clip (30 s of 24 kHz WAV is 1.4 MB) and its JSON, zipped, so the
upload limit is plenty; plus the room read_audio_form allows the rest of a form."""
IMPORT_FIELDS = ("replace",)
RESTORE_FIELDS = ("backup",)


async def read_package_form(request: Request) -> tuple[bytes, bool]:
    """The ``package`` file and the ``replace`` flag of an import's multipart form."""
    fields, package = await read_audio_form(request, "package")
    _only(fields, IMPORT_FIELDS)
    if package is None:
        raise InvalidRequestError(
            "package is required: a voice package (.zip) made by export, as a multipart file",
            param="package",
            code="missing_package",
        )
    return package, flag("replace", fields.get("replace", "false"))


def import_package(library: VoiceLibrary, package: bytes, replace: bool) -> VoiceProfile:
    # The library reads a package from a path (the CLI's way): the upload gets a file of its own.
    with (
        storage_errors("the uploaded package"),
        tempfile.TemporaryDirectory(prefix="voxserve-import-") as scratch,
    ):
        path = Path(scratch) / "package.zip"
        path.write_bytes(package)
        return library.import_package(path, replace=replace)


def export_package(store: VoiceStore, voice_id: str) -> tuple[str, bytes]:
    """A profile's package: its file name and bytes. A package is small, so it is answered from
    memory, and nothing is left on disk when a client leaves in the middle of the download."""
    with (
        storage_errors("the package"),
        tempfile.TemporaryDirectory(prefix="voxserve-export-") as scratch,
    ):
        path = store.export(voice_id, Path(scratch))
        return path.name, path.read_bytes()


def backup_json(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"backup": path.name, "size": stat.st_size, "created_at": stat.st_mtime}


def take_backup(store: VoiceStore) -> dict[str, Any]:
    return backup_json(store.backup())


def list_backups(store: VoiceStore) -> list[dict[str, Any]]:
    """Newest first."""
    listed = []
    for path in store.backups():
        with contextlib.suppress(FileNotFoundError):  # pruned by a backup taken meanwhile
            listed.append(backup_json(path))
    return listed


def backup_name(body: dict[str, Any]) -> str | None:
    """The backup a restore request names; None for the newest."""
    _only(body, RESTORE_FIELDS)
    name = body.get("backup")
    if name is not None and not isinstance(name, str):
        raise InvalidRequestError(
            "backup must be a backup's file name", param="backup", code="invalid_backup"
        )
    return name


def restore(store: VoiceStore, name: str | None) -> str:
    """Restore the backup called ``name``, one that list_backups shows (None: the newest); the
    file name of the one restored."""
    if name is None:
        return store.restore().name
    if "/" in name or "\\" in name:
        raise InvalidRequestError(
            f"backup is a backup's file name from GET /v1/audio/voices/backups, not a path: "
            f"{name!r}",
            param="backup",
            code="invalid_backup",
        )
    source = next((path for path in store.backups() if path.name == name), None)
    if source is not None:
        # Pruned since it was listed: answered below, as the store's message holds its path.
        with contextlib.suppress(NotFoundError):
            return store.restore(source).name
    raise NotFoundError(
        f"no backup named {name!r}; GET /v1/audio/voices/backups lists them",
        param="backup",
        code="backup_not_found",
    )


def _only(fields: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in fields:
        if key not in allowed:
            raise InvalidRequestError(
                f"unknown field {key!r}; this takes {', '.join(allowed)}",
                param=key,
                code="unknown_field",
            )


def flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise InvalidRequestError(
        f"{name} must be true or false, not {value!r}", param=name, code="invalid_value"
    )
