"""The voice store's layout on disk, and backups checked before a restore trusts them: member
names, counts and sizes while inflating, the database SQLite opens, and every row a valid profile
of its own id with its audio present."""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import zipfile
from pathlib import Path

from pydantic import ValidationError

from voxserve.errors import InsufficientStorageError, InvalidRequestError
from voxserve.voices.archives import ZIP_ERRORS, lists_more_than, member_chunks
from voxserve.voices.profile import NAME, VoiceProfile

DATABASE_FILE = "voices.db"
REFERENCE_FILE = "reference.wav"
MAX_PACKAGE_AUDIO_BYTES = 50 * 2**20
MAX_BACKUP_DATABASE_BYTES = 256 * 2**20
MAX_BACKUP_PROFILES = 10_000
BACKUP_MEMBER = re.compile(rf"^(voices\.db|profiles/{NAME}/{re.escape(REFERENCE_FILE)})$")


def row_profile(row_id: object, data: object) -> VoiceProfile:
    """The profile a row holds; ValueError when it holds none, or one of another id."""
    if not isinstance(data, str | bytes):
        raise ValueError("its data is not JSON text")
    try:
        profile = VoiceProfile.model_validate_json(data)  # a ValidationError is a ValueError
    except InvalidRequestError as error:  # what the id's validator raises
        raise ValueError(error.message) from error
    if profile.id != row_id:
        raise ValueError(f"it holds the profile {profile.id!r}")
    return profile


def drop_bad_rows(database: Path) -> None:
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        bad = []
        for row_id, data in db.execute("SELECT id, data FROM profiles"):
            try:
                row_profile(row_id, data)
            except ValueError:
                bad.append((row_id,))
        db.executemany("DELETE FROM profiles WHERE id = ?", bad)


def why_invalid(error: ValueError) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        return f"{field}: {first['msg']}" if field else first["msg"]
    return str(error)


def unpack_backup(source: Path, staging: Path) -> None:
    """Inflate a backup into ``staging``, refusing what is not one of ours before anything is
    written (unknown or repeated names, too many members, a member over its size), and one the
    disk has no room for: zipfile gives no more of a member than its header's size, so their
    sum is the most that can be written."""
    not_ours = InvalidRequestError(
        f"{source.name} is not a voxserve voice backup", param="backup", code="invalid_backup"
    )
    most = MAX_BACKUP_PROFILES + 1
    try:
        if lists_more_than(source, most):
            raise not_ours
        with zipfile.ZipFile(source) as archive:
            members = archive.infolist()
            names = [info.filename for info in members]
            if (
                DATABASE_FILE not in names
                or len(set(names)) < len(names)
                or len(names) > most
                or not all(BACKUP_MEMBER.fullmatch(name) for name in names)
            ):
                raise not_ours
            needed, free = sum(info.file_size for info in members), shutil.disk_usage(staging).free
            if needed > free:
                raise InsufficientStorageError(
                    f"restoring {source.name} needs {needed // 2**20 + 1} MB of disk, and the "
                    f"server has {free // 2**20} MB free",
                    code="insufficient_storage",
                )
            for info in members:
                limit = (
                    MAX_BACKUP_DATABASE_BYTES
                    if info.filename == DATABASE_FILE
                    else MAX_PACKAGE_AUDIO_BYTES
                )
                target = staging / info.filename  # names checked above: nothing escapes staging
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as written:
                    for chunk in member_chunks(archive, info, limit, "backup"):
                        written.write(chunk)
    except ZIP_ERRORS as error:
        raise InvalidRequestError(
            f"{source.name} is not a readable zip ({error})", param="backup", code="invalid_backup"
        ) from error


_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def database_problem(path: Path) -> str | None:
    """What keeps SQLite from reading ``path`` as a whole voices.db; None: nothing."""
    if not path.is_file():
        return f"it has no {DATABASE_FILE}"
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchall()
            kind = db.execute("SELECT type FROM sqlite_master WHERE name = 'profiles'").fetchone()
            columns = {row[1] for row in db.execute("PRAGMA table_info(profiles)")}
    except sqlite3.Error as error:
        if ((getattr(error, "sqlite_errorcode", None) or 0) & 0xFF) in _BUSY:
            raise  # in use by another writer: that says nothing of the file
        return f"its {DATABASE_FILE} is not a database SQLite can read ({error})"
    if integrity != [("ok",)]:
        return f"its {DATABASE_FILE} is damaged ({integrity[0][0]})"
    if kind != ("table",) or not {"id", "data", "created_at", "updated_at"} <= columns:
        return f"its {DATABASE_FILE} holds no table of voice profiles"
    return None


def profiles_problem(root: Path) -> str | None:
    """What is wrong with the profiles of the voices.db under ``root``, which SQLite reads: too
    many, a row that holds no valid profile of its id, audio a profile names that is missing;
    None: nothing."""
    try:
        with contextlib.closing(sqlite3.connect(root / DATABASE_FILE)) as db:
            (count,) = db.execute("SELECT count(*) FROM profiles").fetchone()
            if count > MAX_BACKUP_PROFILES:
                return f"it holds {count} profiles; at most {MAX_BACKUP_PROFILES}"
            for row_id, data in db.execute("SELECT id, data FROM profiles"):
                try:
                    profile = row_profile(row_id, data)
                except ValueError as error:
                    return f"its row {row_id!r:.80} holds no valid profile ({why_invalid(error)})"
                audio = root / "profiles" / profile.id / REFERENCE_FILE
                if profile.has_reference and not audio.is_file():
                    return f"the profile {profile.id!r} has no {REFERENCE_FILE} in it"
    except sqlite3.Error as error:
        return f"its {DATABASE_FILE} cannot be read ({error})"
    return None
