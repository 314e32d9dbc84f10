"""Voice profiles: metadata in SQLite, reference audio as files, both under the data directory.

Every write is atomic: a reference file is written to a temporary name and renamed into place
before its row is committed, and rows change only inside transactions, so a crash at any point
leaves a readable store (at worst an orphan file, swept on the next open). A backup is taken
before every destructive change (delete, update of the audio, import over a profile, restore).

A full disk is a 507 for the write that met it, and the write leaves nothing behind. A store that
cannot be written when it opens (a read-only or full disk, a damaged voices.db) opens read-only:
speech and the profiles it can read are served, writes are refused with a 507 saying why. Rows
that do not hold a valid profile are skipped with a warning. Archives (packages, backups) are
checked before anything is replaced, and their members are counted as they are inflated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voxserve.errors import (
    ConflictError,
    InsufficientStorageError,
    InvalidRequestError,
    NotFoundError,
    storage_error,
)
from voxserve.voices.archives import ZIP_ERRORS, lists_more_than, member_chunks
from voxserve.voices.backups import (
    DATABASE_FILE,
    MAX_PACKAGE_AUDIO_BYTES,
    REFERENCE_FILE,
    database_problem,
    drop_bad_rows,
    profiles_problem,
    row_profile,
    unpack_backup,
    why_invalid,
)
from voxserve.voices.profile import NAME_PATTERN, UPDATABLE_FIELDS, VoiceProfile, check_name

logger = logging.getLogger("voxserve.voices")

PROFILE_FILE = "profile.json"
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


PACKAGE_LIMITS = {PROFILE_FILE: MAX_PACKAGE_JSON_BYTES, REFERENCE_FILE: MAX_PACKAGE_AUDIO_BYTES}


class VoiceStore:
    """Profiles under ``root``: ``voices.db``, ``profiles/<id>/reference.wav``, ``backups/``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.database = self.root / DATABASE_FILE
        self.profiles_dir = self.root / "profiles"
        self.backups_dir = self.root / "backups"
        self._lock = threading.RLock()
        self.read_only: str | None = None
        """Why the store cannot be written; None when it can."""
        self._read_uri: str | None = None
        """While read-only: how SQLite opens voices.db to read it; None when nothing reads it."""
        self._skipped: set[object] = set()
        """Ids of rows warned about already: a bad row is logged once, not on every read."""
        try:
            self._open()
        except (OSError, sqlite3.Error) as error:
            self._open_read_only(error)

    # reading

    def list(self, tag: str | None = None) -> list[VoiceProfile]:
        rows = self._read("SELECT id, data FROM profiles ORDER BY id")
        profiles = [profile for profile in map(self._loaded, rows) if profile is not None]
        return [p for p in profiles if tag is None or tag.lower() in p.tags]

    def find(self, profile_id: str) -> VoiceProfile | None:
        if not NAME_PATTERN.fullmatch(profile_id or ""):
            return None
        rows = self._read("SELECT id, data FROM profiles WHERE id = ?", (profile_id,))
        return self._loaded(rows[0]) if rows else None

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
        with self._writing("the voice profile"):
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
            try:
                with self._new_reference(profile.id, reference_wav), self._connect() as db:
                    db.execute(
                        "INSERT INTO profiles (id, data, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?)",
                        (profile.id, profile.model_dump_json(), now, now),
                    )
            except BaseException:
                # Without its row nothing of the profile may stay, not even an empty folder.
                shutil.rmtree(self.profiles_dir / profile.id, ignore_errors=True)
                raise
            return profile

    def update(
        self, profile_id: str, fields: dict[str, Any], reference_wav: bytes | None = None
    ) -> VoiceProfile:
        with self._writing("the voice profile"):
            current = self.get(profile_id)
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
            if reference_wav and current.has_reference:
                self.backup()  # the old audio is about to go
            with self._new_reference(profile.id, reference_wav), self._connect() as db:
                db.execute(
                    "UPDATE profiles SET data = ?, updated_at = ? WHERE id = ?",
                    (profile.model_dump_json(), profile.updated_at, profile.id),
                )
            return profile

    def delete(self, profile_id: str) -> None:
        with self._writing("the deletion"):
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
        target = output_dir / f"{profile.id}.zip"
        with storage_errors("the package"):
            output_dir.mkdir(parents=True, exist_ok=True)
            with _atomic_file(target) as temporary:
                with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as package:
                    package.writestr(PROFILE_FILE, profile.model_dump_json(indent=2))
                    reference = self.reference_path(profile.id)
                    if reference:
                        package.write(reference, REFERENCE_FILE)
        return target

    def read_package(self, path: Path) -> tuple[VoiceProfile, bytes | None]:
        """A package's profile and audio bytes, checked: known members only, sizes bounded (as
        they inflate: the sizes in a zip's headers are only its claims)."""
        try:
            if lists_more_than(path, len(PACKAGE_LIMITS)):
                raise InvalidRequestError(
                    f"the package holds more than a voice package's {PROFILE_FILE} and "
                    f"{REFERENCE_FILE}",
                    param="package",
                    code="invalid_package",
                )
            with zipfile.ZipFile(path) as package:
                members = package.infolist()
                names = [info.filename for info in members]
                unexpected = set(names) - set(PACKAGE_LIMITS)
                if unexpected:  # covers "../x", absolute paths and anything else (zip-slip)
                    raise InvalidRequestError(
                        f"the package holds unexpected files: {', '.join(sorted(unexpected))}; "
                        f"a voice package holds only {PROFILE_FILE} and {REFERENCE_FILE}",
                        param="package",
                        code="invalid_package",
                    )
                if len(set(names)) < len(names):
                    raise InvalidRequestError(
                        "the package holds a file twice", param="package", code="invalid_package"
                    )
                if PROFILE_FILE not in names:
                    raise InvalidRequestError(
                        f"the package has no {PROFILE_FILE}",
                        param="package",
                        code="invalid_package",
                    )
                contents = {
                    info.filename: b"".join(
                        member_chunks(package, info, PACKAGE_LIMITS[info.filename], "package")
                    )
                    for info in members
                }
            profile = VoiceProfile.model_validate_json(contents[PROFILE_FILE])
        except (*ZIP_ERRORS, OSError) as error:
            raise InvalidRequestError(
                f"not a voice package: {error}", param="package", code="invalid_package"
            ) from error
        except ValidationError as error:
            raise InvalidRequestError(
                f"the package's {PROFILE_FILE} is invalid: {error.errors()[0]['msg']}",
                param="package",
                code="invalid_package",
            ) from error
        return profile, contents.get(REFERENCE_FILE)

    def backup(self) -> Path:
        """A zip of the whole store (a consistent SQLite copy plus every reference file), which
        holds what the store serves: so that every backup taken can be restored, rows the
        store skips are left out."""
        with self._writing("a backup"):
            self.backups_dir.mkdir(parents=True, exist_ok=True)
            target = self.backups_dir / f"voices-{_stamp()}.zip"
            with tempfile.TemporaryDirectory(dir=self.root) as scratch:
                snapshot = Path(scratch) / DATABASE_FILE
                with (
                    self._connect() as source,
                    contextlib.closing(sqlite3.connect(snapshot)) as copy,
                ):
                    source.backup(copy)
                drop_bad_rows(snapshot)
                with _atomic_file(target) as temporary:
                    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
                        archive.write(snapshot, DATABASE_FILE)
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
        """Replace the store with a backup (the newest by default) once all of it is checked: a
        zip of known names within their sizes, a voices.db SQLite finds whole, holding valid
        profiles whose audio is there. The store it replaces is backed up first, so restoring
        that backup undoes a restore. Allowed on a read-only store: it is how a damaged one is
        repaired."""
        with self._lock, storage_errors("the restored voice store"):
            available = self.backups()
            source = Path(backup) if backup else (available[0] if available else None)
            if source is None or not source.exists():
                raise NotFoundError(
                    f"no backup {'at ' + str(source) if source else 'yet'} to restore",
                    param="backup",
                    code="backup_not_found",
                )
            staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".restore-"))
            try:
                unpack_backup(source, staging)
                problem = database_problem(staging / DATABASE_FILE) or profiles_problem(staging)
                if problem:
                    raise InvalidRequestError(
                        f"{source.name} cannot be restored: {problem}",
                        param="backup",
                        code="invalid_backup",
                    )
                self._swap_in(staging, kept=self._keep_current())
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            try:
                self._open()
            except (OSError, sqlite3.Error) as error:
                self._open_read_only(error)
                raise
            return source

    # internals

    def _open(self) -> None:
        """Ready the store for writing (its folder, the WAL journal, the table), then sweep what
        a crash left. Raises OSError or sqlite3.Error when it cannot be written."""
        self.profiles_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(self.database, timeout=30)) as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept in the file: set once, here
            with db:
                db.execute(SCHEMA)
        self.read_only = self._read_uri = None
        self._sweep_orphans()

    def _open_read_only(self, error: Exception) -> None:
        self.read_only = _reason(error)
        self._read_uri = self._readable_uri()
        logger.warning(
            "the voice store in %s cannot be written (%s): it is read-only, serving %s; speech is "
            "served, and changes to profiles are refused until it can be written (a damaged "
            "voices.db is repaired by restoring a backup: voxserve voices restore)",
            self.root,
            self.read_only,
            "the profiles it can read" if self._read_uri else "no profiles (nothing reads it)",
        )

    def _readable_uri(self) -> str | None:
        """How SQLite reads a store it cannot write: read-only, or as immutable in a folder where
        it cannot make the WAL's shared-memory file either; None when neither reads it."""
        uri = self.database.absolute().as_uri()
        for query in ("mode=ro", "immutable=1"):
            try:
                with contextlib.closing(sqlite3.connect(f"{uri}?{query}", uri=True)) as db:
                    db.execute("SELECT id, data FROM profiles LIMIT 1").fetchall()
            except sqlite3.Error:
                continue
            return f"{uri}?{query}"
        return None

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """The block under the lock, on a store that can be written (a read-only one is opened
        again first: the disk may have been freed since), a full disk told as a 507."""
        with self._lock:
            if self.read_only is not None:
                try:
                    self._open()
                except (OSError, sqlite3.Error) as error:
                    self.read_only = _reason(error)
                    raise InsufficientStorageError(
                        f"the voice store is read-only ({self.read_only}), so {what} cannot be "
                        "saved; the server's log says more",
                        code="store_read_only",
                    ) from error
                logger.info("the voice store in %s can be written again", self.root)
            with storage_errors(what):
                yield

    def _read(self, query: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.read_only is None:
            with self._connect() as db:
                return db.execute(query, parameters).fetchall()
        if self._read_uri is None:
            return []
        with contextlib.closing(sqlite3.connect(self._read_uri, uri=True, timeout=30)) as db:
            return db.execute(query, parameters).fetchall()

    def _loaded(self, row: tuple[Any, ...]) -> VoiceProfile | None:
        """The profile a row holds; None, with a warning the first time, for a row holding none
        (one bad row must not take the listing, or the server's start, with it)."""
        row_id, data = row
        try:
            return row_profile(row_id, data)
        except ValueError as error:
            if row_id not in self._skipped:
                self._skipped.add(row_id)
                logger.warning(
                    "the voice store in %s skips the row %.80r: %s (restore a backup to repair it)",
                    self.root,
                    row_id,
                    why_invalid(error),
                )
            return None

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.database, timeout=30)
        try:
            connection.execute("PRAGMA synchronous=FULL")
            with connection:  # one transaction: committed on success, rolled back on error
                yield connection
        finally:
            connection.close()

    @contextlib.contextmanager
    def _new_reference(self, profile_id: str, data: bytes | None) -> Iterator[None]:
        """``data``, when given, in place as the profile's reference while the block commits its
        row; when the block fails, the reference it replaced is put back, so audio and row agree
        (a full disk often shows only at the commit)."""
        if not data:
            yield
            return
        reference = self.profiles_dir / profile_id / REFERENCE_FILE
        previous = reference.with_name(f".{REFERENCE_FILE}.previous.part")  # swept after a crash
        previous.unlink(missing_ok=True)
        replacing = reference.exists()
        if replacing:
            _link_or_copy(reference, previous)
        try:
            reference.parent.mkdir(parents=True, exist_ok=True)
            with _atomic_file(reference) as temporary:
                temporary.write_bytes(data)
            yield
        except BaseException:
            if replacing:
                os.replace(previous, reference)
            else:
                reference.unlink(missing_ok=True)
            raise
        finally:
            previous.unlink(missing_ok=True)

    def _keep_current(self) -> Path | None:
        """Back up the store a restore replaces; None when that is done. A voices.db that SQLite
        cannot read makes no restorable backup: the folder returned is where its files are kept,
        out of the way of restores."""
        if database_problem(self.database) is None:
            self.backup()
            return None
        return self.backups_dir / f"unreadable-{_stamp()}"

    def _swap_in(self, staging: Path, kept: Path | None) -> None:
        """Swap whole files and folders by rename: the store is the old one or the new one, never
        half. voices.db leaves with its WAL and shared-memory files, which belong to it."""
        retired = kept or self.root / f".retired-{time.time_ns()}"
        retired.mkdir(parents=True)
        for part in (DATABASE_FILE, f"{DATABASE_FILE}-wal", f"{DATABASE_FILE}-shm", "profiles"):
            if (self.root / part).exists():
                os.replace(self.root / part, retired / part)
        for part in (DATABASE_FILE, "profiles"):
            if (staging / part).exists():
                os.replace(staging / part, self.root / part)
        self.profiles_dir.mkdir(exist_ok=True)
        if kept is None:
            shutil.rmtree(retired, ignore_errors=True)
        else:
            logger.warning("the unreadable voice store a restore replaced is kept in %s", kept)

    def _sweep_orphans(self) -> None:
        """Folders without a row (a crash between file and row) and leftover temporary files.
        A row is known by its id alone: the folder of a row that does not load is kept."""
        known = {row[0] for row in self._read("SELECT id FROM profiles")}
        for folder in self.profiles_dir.iterdir():
            if folder.is_dir() and folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)
        for leftover in [*self.root.glob(".restore-*"), *self.root.glob(".retired-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        for partial in self.root.rglob("*.part"):
            partial.unlink(missing_ok=True)


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """A full or unwritable disk met in the block, raised as the 507 that says so; any other
    OSError or SQLite error is left as the bug it is."""
    try:
        yield
    except (OSError, sqlite3.Error) as error:
        refusal = storage_error(error, what)
        if refusal is None:
            raise
        raise refusal from error


def _reason(error: Exception) -> str:
    """An error's reason, without the path an OSError names (clients are told it)."""
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


def _stamp() -> str:
    # One reading of the clock for the seconds and their fraction: two readings could straddle
    # a second, and a backup named later would sort before the one it replaced.
    seconds, fraction = divmod(time.time_ns(), 10**9)
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(seconds)) + f"-{fraction:09d}"


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(source, target)


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
