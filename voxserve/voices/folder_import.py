"""A voice library from a folder of clips: one profile per clip, each made or refused on its own.

Each audio file becomes a profile named after the file ("Ada Lovelace.wav" -> ``ada-lovelace``),
its transcript read from the same-named ``.txt`` beside it or, without one, heard by Whisper
(the library transcribes). A clip that fails (too short, silent, not audio, a name taken) is
reported with its reason and skipped; the rest go on. Nothing half-made is kept: a profile is
written whole by the store, or not at all. The CLI (`voxserve voices import-folder`) reads a
directory; the HTTP API (`POST /v1/voices/import-folder`) the same files uploaded together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

from voxserve.errors import InvalidRequestError, VoxserveError
from voxserve.voices.library import VoiceLibrary
from voxserve.voices.profile import NAME_PATTERN

AUDIO_SUFFIXES = frozenset(
    {".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".webm"}
)
TRANSCRIPT_SUFFIX = ".txt"
_NOT_IN_NAME = re.compile(r"[^a-z0-9_-]+")

Outcome = Literal["created", "replaced", "skipped", "failed"]


@dataclass(frozen=True)
class ClipFile:
    """A file of the batch: its name as the user knows it, and its bytes when asked for (a
    folder's clips are read one at a time, not all at once)."""

    name: str
    read: Callable[[], bytes]


@dataclass(frozen=True)
class ImportResult:
    file: str
    outcome: Outcome
    voice: str | None = None
    """The profile made or replaced (or the one that blocked it)."""
    reason: str | None = None
    """Why it was skipped or failed."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "outcome": self.outcome,
            "voice": self.voice,
            "reason": self.reason,
        }


ImportProgress = Callable[[int, int, str], None]
"""(files done, files in all, the file just done)."""


def folder_files(directory: Path) -> list[ClipFile]:
    """The files directly in ``directory`` (not hidden, not in subfolders), in name order."""
    paths = sorted(
        path for path in directory.iterdir() if path.is_file() and not path.name.startswith(".")
    )
    return [ClipFile(path.name, path.read_bytes) for path in paths]


def profile_name(file_name: str) -> str | None:
    """A profile id from a file's name: lowercase, runs of other characters as one ``-``; None
    when nothing usable is left ("---.wav")."""
    stem = _NOT_IN_NAME.sub("-", PurePath(file_name).stem.lower()).strip("-_")[:64].rstrip("-_")
    return stem if NAME_PATTERN.fullmatch(stem) else None


def import_clips(
    library: VoiceLibrary,
    files: Sequence[ClipFile],
    *,
    fields: dict[str, Any] | None = None,
    replace: bool = False,
    progress: ImportProgress | None = None,
) -> list[ImportResult]:
    """A profile from every audio file of ``files``, with ``fields`` (tags, engine, ...) shared
    by all; the ``.txt`` files are transcripts, matched to clips by name. Blocking: call it from a
    worker thread. A file of another kind is skipped, and said so."""
    transcripts = {
        PurePath(file.name).stem: file for file in files if _suffix(file) == TRANSCRIPT_SUFFIX
    }
    others = [file for file in files if _suffix(file) not in AUDIO_SUFFIXES | {TRANSCRIPT_SUFFIX}]
    clips = [file for file in files if _suffix(file) in AUDIO_SUFFIXES]
    results = [ImportResult(file.name, "skipped", reason="not an audio clip") for file in others]
    claimed: dict[str, str] = {}  # profile name -> the file of this batch that took it
    for done, clip in enumerate(clips, 1):
        results.append(_import_one(library, clip, transcripts, claimed, fields or {}, replace))
        if progress is not None:
            progress(done, len(clips), clip.name)
    return results


def _import_one(
    library: VoiceLibrary,
    clip: ClipFile,
    transcripts: dict[str, ClipFile],
    claimed: dict[str, str],
    fields: dict[str, Any],
    replace: bool,
) -> ImportResult:
    name = profile_name(clip.name)
    if name is None:
        return ImportResult(clip.name, "failed", reason="no profile name can be made of its name")
    if name in claimed:
        why = f"{claimed[name]} of this batch is named {name} too"
        return ImportResult(clip.name, "failed", name, why)
    claimed[name] = clip.name
    exists = library.store.find(name) is not None
    if exists and not replace:
        why = "a voice profile of this name exists already (import with replace to replace it)"
        return ImportResult(clip.name, "skipped", name, why)
    try:
        transcript = _transcript(transcripts.get(PurePath(clip.name).stem))
        profile_fields = {**fields, **({"transcript": transcript} if transcript else {})}
        if exists:
            library.update(name, profile_fields, clip.read())
            return ImportResult(clip.name, "replaced", name)
        library.create({**profile_fields, "id": name}, clip.read())
    except VoxserveError as error:
        return ImportResult(clip.name, "failed", name, error.message)
    except OSError as error:  # the file went away, or cannot be read
        return ImportResult(clip.name, "failed", name, f"cannot read it: {error.strerror}")
    return ImportResult(clip.name, "created", name)


def _transcript(file: ClipFile | None) -> str | None:
    if file is None:
        return None
    try:
        return file.read().decode("utf-8-sig").strip() or None
    except UnicodeDecodeError as error:
        raise InvalidRequestError(
            f"its transcript {file.name} is not UTF-8 text", param="transcript"
        ) from error


def _suffix(file: ClipFile) -> str:
    return PurePath(file.name).suffix.lower()
