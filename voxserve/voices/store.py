"""Voice profiles: metadata in SQLite, reference audio as files, both under the data directory.

Every write is atomic: a reference file is written to a temporary name and renamed into place
before its row is committed, and rows change only inside transactions, so a crash at any point
leaves a readable store (at worst an orphan file, swept on the next open). A backup is taken
before every destructive change (delete, update of the audio, import over a profile, restore).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voxserve.errors import ConflictError, InvalidRequestError, NotFoundError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
REFERENCE_FILE = "reference.wav"
PROFILE_FILE = "profile.json"
MAX_PACKAGE_AUDIO_BYTES = 50 * 2**20
MAX_PACKAGE_JSON_BYTES = 256 * 2**10
KEPT_BACKUPS = 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
"""


def check_name(name: str) -> str:
    """A profile id: a safe slug, never a path."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequestError(
            f"invalid voice name {name!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (no spaces, slashes or dots)",
            param="name",
            code="invalid_name",
        )
    return name


class VoiceDefaults(BaseModel):
    """Synthesis parameters a profile brings; None: the engine's own."""

    model_config = ConfigDict(extra="forbid")

    speed: float | None = Field(None, ge=0.25, le=4.0)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    seed: int | None = None


class VoiceProfile(BaseModel):
    """A voice of the user's own."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    id: str
    display_name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=2000)
    tags: list[str] = Field(default_factory=list, max_length=32)
    language: str | None = Field(None, max_length=35)
    engine: str | None = None
    """Preferred engine; None: the default engine."""
    voice: str | None = None
    """The engine voice to use when not cloning (e.g. a built-in such as warm_female)."""
    transcript: str | None = Field(None, max_length=5000)
    """What the reference audio says (cloning engines need it)."""
    speaker_description: str | None = Field(None, max_length=1000)
    """For description-driven engines, e.g. "feminine, young adult, warm, conversational"."""
    scene_prompt: str | None = Field(None, max_length=2000)
    defaults: VoiceDefaults = Field(default_factory=VoiceDefaults)
    has_reference: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        return check_name(value)

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, tags: list[str]) -> list[str]:
        cleaned = []
        for tag in tags:
            tag = tag.strip().lower()
            if not tag or len(tag) > 32:
                raise ValueError("each tag has 1-32 characters")
            if tag not in cleaned:
                cleaned.append(tag)
        return cleaned


UPDATABLE_FIELDS = set(VoiceProfile.model_fields) - {
    "id",
    "has_reference",
    "created_at",
    "updated_at",
}


class VoiceStore:
    """Profiles under ``root``: ``voices.db``, ``profiles/<id>/reference.wav``, ``backups/``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.profiles_dir = self.root / "profiles"
        self.backups_dir = self.root / "backups"
        self.profiles_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        with self._connect() as db:
            db.execute(SCHEMA)
        self._sweep_orphans()

    # reading

    def list(self, tag: str | None = None) -> list[VoiceProfile]:
        with self._connect() as db:
            rows = db.execute("SELECT data FROM profiles ORDER BY id").fetchall()
        profiles = [VoiceProfile.model_validate_json(row[0]) for row in rows]
        return [p for p in profiles if tag is None or tag.lower() in p.tags]

    def find(self, profile_id: str) -> VoiceProfile | None:
        if not NAME_PATTERN.fullmatch(profile_id or ""):
            return None
        with self._connect() as db:
            row = db.execute("SELECT data FROM profiles WHERE id = ?", (profile_id,)).fetchone()
        return VoiceProfile.model_validate_json(row[0]) if row else None

    def get(self, profile_id: str) -> VoiceProfile:
        profile = self.find(profile_id)
        if profile is None:
            raise NotFoundError(
                f"no voice profile {profile_id!r}", param="voice", code="voice_not_found"
            )
        return profile

    def reference_path(self, profile_id: str) -> Path | None:
        path = self.profiles_dir / check_name(profile_id) / REFERENCE_FILE
        return path if path.exists() else None

    # writing

    def create(self, profile: VoiceProfile, reference_wav: bytes | None = None) -> VoiceProfile:
        check_name(profile.id)  # again: the id becomes a folder name
        with self._lock:
            if self.find(profile.id) is not None:
                raise ConflictError(
                    f"a voice profile named {profile.id!r} exists already; pick another name or "
                    "update it",
                    param="name",
                    code="voice_exists",
                )
            now = time.time()
            profile = profile.model_copy(
                update={"created_at": now, "updated_at": now, "has_reference": bool(reference_wav)}
            )
            if reference_wav:
                self._write_reference(profile.id, reference_wav)
            with self._connect() as db:
                db.execute(
                    "INSERT INTO profiles (id, data, created_at, updated_at) VALUES (?, ?, ?, ?)",
                    (profile.id, profile.model_dump_json(), now, now),
                )
            return profile

    def update(
        self, profile_id: str, fields: dict[str, Any], reference_wav: bytes | None = None
    ) -> VoiceProfile:
        with self._lock:
            current = self.get(profile_id)
            if reference_wav and current.has_reference:
                self.backup()  # the old audio is about to go
            unknown = set(fields) - UPDATABLE_FIELDS
            if unknown:
                raise InvalidRequestError(
                    f"cannot update {', '.join(sorted(unknown))}", param=sorted(unknown)[0]
                )
            data = {**current.model_dump(), **fields, "updated_at": time.time()}
            if reference_wav:
                data["has_reference"] = True
            try:
                profile = VoiceProfile.model_validate(data)
            except ValidationError as error:
                first = error.errors()[0]
                field = ".".join(str(part) for part in first["loc"])
                raise InvalidRequestError(f"{field}: {first['msg']}", param=field) from error
            if reference_wav:
                self._write_reference(profile.id, reference_wav)
            with self._connect() as db:
                db.execute(
                    "UPDATE profiles SET data = ?, updated_at = ? WHERE id = ?",
                    (profile.model_dump_json(), profile.updated_at, profile.id),
                )
            return profile

    def delete(self, profile_id: str) -> None:
        with self._lock:
            self.get(profile_id)
            self.backup()
            with self._connect() as db:
                db.execute("DELETE FROM profiles WHERE id = ?", (profile_id,))
            # After the row: a crash in between leaves an orphan folder, swept later.
            shutil.rmtree(self.profiles_dir / profile_id, ignore_errors=True)

    # packages and backups

    def export(self, profile_id: str, output_dir: Path) -> Path:
        """A self-contained package: ``<id>.zip`` holding profile.json and the reference audio."""
        profile = self.get(profile_id)
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        target = output_dir / f"{profile.id}.zip"
        with _atomic_file(target) as temporary:
            with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as package:
                package.writestr(PROFILE_FILE, profile.model_dump_json(indent=2))
                reference = self.reference_path(profile.id)
                if reference:
                    package.write(reference, REFERENCE_FILE)
        return target

    def read_package(self, path: Path) -> tuple[VoiceProfile, bytes | None]:
        """A package's profile and audio bytes, checked: known members only, sizes bounded."""
        try:
            with zipfile.ZipFile(path) as package:
                members = {info.filename: info for info in package.infolist()}
                unexpected = set(members) - {PROFILE_FILE, REFERENCE_FILE}
                if unexpected:  # covers "../x", absolute paths and anything else (zip-slip)
                    raise InvalidRequestError(
                        f"the package holds unexpected files: {', '.join(sorted(unexpected))}; "
                        f"a voice package holds only {PROFILE_FILE} and {REFERENCE_FILE}",
                        param="package",
                        code="invalid_package",
                    )
                if PROFILE_FILE not in members:
                    raise InvalidRequestError(
                        f"the package has no {PROFILE_FILE}",
                        param="package",
                        code="invalid_package",
                    )
                limits = {
                    PROFILE_FILE: MAX_PACKAGE_JSON_BYTES,
                    REFERENCE_FILE: MAX_PACKAGE_AUDIO_BYTES,
                }
                for name, info in members.items():
                    if info.file_size > limits[name]:
                        raise InvalidRequestError(
                            f"{name} in the package is {info.file_size} bytes; at most "
                            f"{limits[name]}",
                            param="package",
                            code="package_too_large",
                        )
                profile = VoiceProfile.model_validate_json(package.read(PROFILE_FILE))
                audio = package.read(REFERENCE_FILE) if REFERENCE_FILE in members else None
        except (zipfile.BadZipFile, OSError) as error:
            raise InvalidRequestError(
                f"not a voice package: {error}", param="package", code="invalid_package"
            ) from error
        except ValidationError as error:
            raise InvalidRequestError(
                f"the package's {PROFILE_FILE} is invalid: {error.errors()[0]['msg']}",
                param="package",
                code="invalid_package",
            ) from error
        return profile, audio

    def backup(self) -> Path:
        """A zip of the whole store (a consistent SQLite copy plus every reference file)."""
        with self._lock:
            self.backups_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 10**9:09d}"
            target = self.backups_dir / f"voices-{stamp}.zip"
            with tempfile.TemporaryDirectory(dir=self.root) as scratch:
                snapshot = Path(scratch) / "voices.db"
                with (
                    self._connect() as source,
                    contextlib.closing(sqlite3.connect(snapshot)) as copy,
                ):
                    source.backup(copy)
                with _atomic_file(target) as temporary:
                    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
                        archive.write(snapshot, "voices.db")
                        for reference in sorted(self.profiles_dir.glob(f"*/{REFERENCE_FILE}")):
                            archive.write(
                                reference, f"profiles/{reference.parent.name}/{REFERENCE_FILE}"
                            )
            for old in self.backups()[KEPT_BACKUPS:]:
                old.unlink(missing_ok=True)
            return target

    def backups(self) -> list[Path]:
        """Newest first."""
        return sorted(self.backups_dir.glob("voices-*.zip"), reverse=True)

    def restore(self, backup: Path | None = None) -> Path:
        """Replace the store with a backup (the newest by default), backing up the current one."""
        with self._lock:
            available = self.backups()
            source = Path(backup) if backup else (available[0] if available else None)
            if source is None or not source.exists():
                raise NotFoundError(
                    f"no backup {'at ' + str(source) if source else 'yet'} to restore",
                    param="backup",
                    code="backup_not_found",
                )
            with zipfile.ZipFile(source) as archive:
                names = archive.namelist()
                allowed = re.compile(
                    rf"^(voices\.db|profiles/[a-z0-9][a-z0-9_-]{{0,63}}/{REFERENCE_FILE})$"
                )
                if "voices.db" not in names or not all(allowed.fullmatch(name) for name in names):
                    raise InvalidRequestError(
                        f"{source.name} is not a voxserve voice backup",
                        param="backup",
                        code="invalid_backup",
                    )
                self.backup()
                staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".restore-"))
                archive.extractall(staging)  # names checked above: nothing escapes `staging`
            # Swap whole directories by rename: the store is the old one or the new one, never half.
            retired = self.root / f".retired-{time.time_ns()}"
            retired.mkdir()
            for part in ("voices.db", "profiles"):
                if (self.root / part).exists():
                    os.replace(self.root / part, retired / part)
            for part in ("voices.db", "profiles"):
                if (staging / part).exists():
                    os.replace(staging / part, self.root / part)
            self.profiles_dir.mkdir(exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(retired, ignore_errors=True)
            return source

    # internals

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.root / "voices.db", timeout=30)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            with connection:  # one transaction: committed on success, rolled back on error
                yield connection
        finally:
            connection.close()

    def _write_reference(self, profile_id: str, data: bytes) -> None:
        folder = self.profiles_dir / profile_id
        folder.mkdir(parents=True, exist_ok=True)
        with _atomic_file(folder / REFERENCE_FILE) as temporary:
            temporary.write_bytes(data)

    def _sweep_orphans(self) -> None:
        """Folders without a row (a crash between file and row) and leftover temporary files."""
        known = {profile.id for profile in self.list()}
        for folder in self.profiles_dir.iterdir():
            if folder.is_dir() and folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)
        for leftover in [*self.root.glob(".restore-*"), *self.root.glob(".retired-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        for partial in self.root.rglob("*.part"):
            partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _atomic_file(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target``, fsynced and renamed onto it when the block succeeds."""
    descriptor, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
