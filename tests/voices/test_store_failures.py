"""The profile store when things go wrong: a full or unwritable disk, a damaged voices.db, bad
rows, backups and packages that are not what they claim. A full disk is simulated (SQLite's
max_page_count, or ENOSPC from fsync): filling a real one is out of a test's reach."""

from __future__ import annotations

import errno
import functools
import io
import logging
import os
import shutil
import sqlite3
import struct
import tracemalloc
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from voxserve.errors import InsufficientStorageError, InvalidRequestError
from voxserve.voices.profile import VoiceProfile
from voxserve.voices.store import VoiceStore

AUDIO = b"RIFF-pretend-wav-bytes" * 100
LONG = "x" * 5000  # a row that needs pages of its own
_connect = sqlite3.connect  # SQLite's own, for the tests that wrap it


def profile(name: str, **fields) -> VoiceProfile:
    return VoiceProfile(id=name, display_name=name.title(), **fields)


@pytest.fixture
def store(tmp_path: Path) -> VoiceStore:
    return VoiceStore(tmp_path / "voices")


def database(store: VoiceStore) -> Path:
    return store.root / "voices.db"


def leftovers(store: VoiceStore) -> list[Path]:
    """What a refused write left behind: folders of no profile, temporary files."""
    known = {each.id for each in store.list()}
    folders = [path for path in store.profiles_dir.iterdir() if path.name not in known]
    return folders + list(store.root.rglob("*.part"))


# --- a full disk -----------------------------------------------------------------------------


def fill_database(store: VoiceStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the store's database can grow no more: SQLite answers "database or disk is
    full" (SQLITE_FULL), as it does when the disk under it is."""
    with sqlite3.connect(database(store)) as db:
        (pages,) = db.execute("PRAGMA page_count").fetchone()

    def connect(*args, **kwargs) -> sqlite3.Connection:
        connection = _connect(*args, **kwargs)
        connection.execute(f"PRAGMA max_page_count = {pages}")
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)


def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every file written fails where a full disk shows it at the latest: at its
    fsync."""

    def fsync(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def assert_disk_full(refused: pytest.ExceptionInfo[InsufficientStorageError]) -> None:
    assert (refused.value.status_code, refused.value.code) == (507, "insufficient_storage")
    assert "disk is full" in refused.value.message
    assert "/" not in refused.value.message  # no path of the server's


def test_a_full_disk_at_the_commit_is_a_507_and_leaves_nothing(store: VoiceStore, monkeypatch):
    fill_database(store, monkeypatch)
    with pytest.raises(InsufficientStorageError) as refused:
        store.create(profile("narrator", transcript=LONG), AUDIO)
    assert_disk_full(refused)
    assert store.list() == [] and leftovers(store) == []
    assert not (store.profiles_dir / "narrator").exists()


def test_a_full_disk_while_writing_the_audio_is_a_507_and_leaves_nothing(store, monkeypatch):
    full_disk(monkeypatch)
    with pytest.raises(InsufficientStorageError) as refused:
        store.create(profile("narrator"), AUDIO)
    assert_disk_full(refused)
    assert store.list() == [] and leftovers(store) == []


def test_an_update_refused_by_a_full_disk_keeps_the_old_audio(
    store: VoiceStore, monkeypatch: pytest.MonkeyPatch
):
    store.create(profile("narrator", transcript="Old words."), AUDIO)
    fill_database(store, monkeypatch)
    with pytest.raises(InsufficientStorageError) as refused:
        store.update("narrator", {"transcript": LONG}, b"new audio" * 100)
    assert_disk_full(refused)
    monkeypatch.undo()
    assert store.get("narrator").transcript == "Old words."
    assert store.reference_path("narrator").read_bytes() == AUDIO  # put back: audio and row agree
    assert leftovers(store) == []


def test_a_delete_whose_backup_meets_a_full_disk_deletes_nothing(store: VoiceStore, monkeypatch):
    store.create(profile("narrator"), AUDIO)
    full_disk(monkeypatch)
    with pytest.raises(InsufficientStorageError) as refused:
        store.delete("narrator")  # no backup, no delete
    assert_disk_full(refused)
    monkeypatch.undo()
    assert store.get("narrator") and store.backups() == [] and leftovers(store) == []
    assert not [path for path in store.root.iterdir() if path.name.startswith("tmp")]


# --- a store it cannot write -----------------------------------------------------------------


class _NoWal(sqlite3.Connection):
    """A connection whose database is read-only, as in a folder the server may not write."""

    def execute(self, sql: str, *args):  # type: ignore[override]
        if sql.lstrip().upper().startswith("PRAGMA JOURNAL_MODE"):
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return super().execute(sql, *args)


@pytest.fixture
def unwritable(monkeypatch: pytest.MonkeyPatch):
    """Make a store's folder one the server cannot write: by its permissions, or, for root,
    whom permissions do not stop, by SQLite refusing the WAL journal as it does there."""
    changed: list[tuple[Path, int]] = []

    def make(root: Path) -> None:
        if os.geteuid() == 0:
            monkeypatch.setattr(sqlite3, "connect", functools.partial(_connect, factory=_NoWal))
            return
        for path in sorted(root.rglob("*"), reverse=True) + [root]:
            changed.append((path, path.stat().st_mode))
            path.chmod(0o555 if path.is_dir() else 0o444)

    yield make
    for path, mode in changed:
        path.chmod(mode)


def test_a_store_it_cannot_write_opens_read_only_and_says_why(
    tmp_path: Path, unwritable, caplog: pytest.LogCaptureFixture
):
    root = tmp_path / "voices"
    VoiceStore(root).create(profile("narrator"), AUDIO)
    unwritable(root)
    with caplog.at_level(logging.WARNING, logger="voxserve.voices"):
        store = VoiceStore(root)  # raised at PRAGMA journal_mode=WAL before
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "read-only" in warnings[0].getMessage()
    assert store.read_only and "readonly" in store.read_only
    assert [each.id for each in store.list()] == ["narrator"]
    assert store.reference_path("narrator").read_bytes() == AUDIO
    writes = {
        "create": lambda: store.create(profile("other")),
        "update": lambda: store.update("narrator", {"description": "changed"}),
        "delete": lambda: store.delete("narrator"),
        "backup": store.backup,
    }
    for write in writes.values():
        with pytest.raises(InsufficientStorageError) as refused:
            write()
        assert (refused.value.status_code, refused.value.code) == (507, "store_read_only")
        assert "read-only" in refused.value.message and "readonly" in refused.value.message
    assert [each.id for each in store.list()] == ["narrator"]


def test_a_read_only_store_becomes_writable_again_once_it_can_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = tmp_path / "voices"
    VoiceStore(root)
    monkeypatch.setattr(sqlite3, "connect", functools.partial(_connect, factory=_NoWal))
    store = VoiceStore(root)
    assert store.read_only
    monkeypatch.undo()  # the disk is fixed: the next write opens it again
    store.create(profile("narrator"))
    assert store.read_only is None and store.get("narrator")


# --- damaged stores and rows -----------------------------------------------------------------


def test_a_bad_row_is_skipped_with_one_warning(store: VoiceStore, caplog):
    store.create(profile("good"), AUDIO)
    store.create(profile("kept"), AUDIO)
    with sqlite3.connect(database(store)) as db:
        db.execute("INSERT INTO profiles VALUES ('../../etc', '{}', 0, 0)")
        db.execute("UPDATE profiles SET data = 'not json' WHERE id = 'kept'")
    with caplog.at_level(logging.WARNING, logger="voxserve.voices"):
        reopened = VoiceStore(store.root)  # raised a ValidationError before
        assert [each.id for each in reopened.list()] == ["good"]
        assert [each.id for each in reopened.list()] == ["good"]
        assert reopened.find("kept") is None
    skipped = [record.getMessage() for record in caplog.records]
    assert len(skipped) == 2, skipped  # one for each bad row, however often it is read
    assert (reopened.profiles_dir / "kept").exists()  # its audio is not swept as an orphan


def test_a_restore_over_a_bad_row_can_be_undone(store: VoiceStore):
    store.create(profile("first"))
    older = store.backup()
    store.create(profile("second"))
    with sqlite3.connect(database(store)) as db:
        db.execute("INSERT INTO profiles VALUES ('../../etc', '{}', 0, 0)")
    store.restore(older)
    store.restore()  # the backup of the store it replaced, which served "first" and "second"
    assert [each.id for each in store.list()] == ["first", "second"]


def test_a_damaged_database_opens_read_only_and_a_restore_repairs_it(store: VoiceStore, caplog):
    store.create(profile("narrator"), AUDIO)
    good = store.backup()
    database(store).write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="voxserve.voices"):
        damaged = VoiceStore(store.root)  # raised "file is not a database" before
    assert damaged.read_only and damaged.list() == [] and damaged.find("narrator") is None
    with pytest.raises(InsufficientStorageError):
        damaged.create(profile("other"))
    assert damaged.restore() == good
    assert damaged.read_only is None and damaged.get("narrator").has_reference
    kept = list(damaged.backups_dir.glob("unreadable-*"))
    assert len(kept) == 1 and (kept[0] / "voices.db").read_bytes().startswith(b"this is not")
    assert damaged.backups() == [good]  # what it kept is no backup a restore would pick


# --- backups that are not what they claim ----------------------------------------------------


def backup_with(path: Path, database: bytes, **files: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("voices.db", database)
        for name, data in files.items():
            archive.writestr(f"profiles/{name}/reference.wav", data)
    return path


def database_with(tmp_path: Path, rows: list[tuple[str, str]]) -> bytes:
    path = tmp_path / "made.db"
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE profiles (id TEXT PRIMARY KEY, data TEXT NOT NULL, "
                   "created_at REAL NOT NULL, updated_at REAL NOT NULL)")  # fmt: skip
        db.executemany("INSERT INTO profiles VALUES (?, ?, 0, 0)", rows)
    data = path.read_bytes()
    path.unlink()
    return data


def row(name: str, **fields) -> tuple[str, str]:
    return name, profile(name, **fields).model_dump_json()


@pytest.mark.parametrize(
    ("make_database", "files", "said"),
    [
        (lambda tmp: b"garbage" * 1000, {}, "not a database SQLite can read"),
        (lambda tmp: b"", {}, "no table of voice profiles"),
        (lambda tmp: database_with(tmp, [("../../etc", '{"id": "etc", "display_name": "x"}')]),
         {}, "'../../etc' holds no valid profile"),
        (lambda tmp: database_with(tmp, [("a", '{"id": "b", "display_name": "x"}')]),
         {}, "holds the profile 'b'"),
        (lambda tmp: database_with(tmp, [row("cloned", has_reference=True)]), {},
         "has no reference.wav"),
        (lambda tmp: database_with(tmp, [("odd", "not json")]), {}, "'odd' holds no valid"),
    ],
)  # fmt: skip
def test_a_bad_backup_is_refused_before_anything_is_replaced(
    store: VoiceStore, tmp_path: Path, make_database, files, said
):
    store.create(profile("kept"), AUDIO)
    backups_before = store.backups()
    bad = backup_with(tmp_path / "bad.zip", make_database(tmp_path), **files)
    with pytest.raises(InvalidRequestError) as refused:
        store.restore(bad)
    assert (refused.value.code, refused.value.param) == ("invalid_backup", "backup")
    assert said in refused.value.message
    assert [each.id for each in store.list()] == ["kept"]
    assert store.backups() == backups_before  # refused before the current store was backed up
    assert [each.id for each in VoiceStore(store.root).list()] == ["kept"]
    assert not list(store.root.glob(".restore-*"))


def test_a_restore_is_undone_by_restoring_the_backup_it_took(store: VoiceStore):
    store.create(profile("first"))
    older = store.backup()
    store.create(profile("second"), AUDIO)
    store.restore(older)
    assert [each.id for each in store.list()] == ["first"]
    store.restore()  # the newest: the store the restore replaced
    assert [each.id for each in store.list()] == ["first", "second"]
    assert store.reference_path("second").read_bytes() == AUDIO


def test_a_backup_member_larger_than_it_may_be_is_refused(store: VoiceStore, tmp_path: Path):
    store.create(profile("kept"))
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("voices.db", database_with(tmp_path, [row("a")]))
        archive.writestr("profiles/a/reference.wav", bytes(51 * 2**20))
    with pytest.raises(InvalidRequestError, match="too large"):
        store.restore(bomb)
    assert [each.id for each in store.list()] == ["kept"]


def test_a_backup_the_disk_has_no_room_for_is_refused_before_it_is_unpacked(
    store: VoiceStore, monkeypatch: pytest.MonkeyPatch
):
    store.create(profile("kept"), AUDIO)
    backup = store.backup()
    full = SimpleNamespace(total=10**9, used=10**9, free=0)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)
    with pytest.raises(InsufficientStorageError) as refused:
        store.restore(backup)
    assert (refused.value.status_code, refused.value.code) == (507, "insufficient_storage")
    assert "MB of disk" in refused.value.message
    monkeypatch.undo()
    assert store.backups() == [backup] and not list(store.root.glob(".restore-*"))


# --- packages whose headers lie ----------------------------------------------------------------


def lying_package(actual_bytes: int, declared_bytes: int) -> bytes:
    """A package whose reference.wav inflates to ``actual_bytes`` while its headers (local and
    central) say ``declared_bytes``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("profile.json", profile("liar").model_dump_json())
        package.writestr("reference.wav", bytes(actual_bytes))
    data = bytearray(buffer.getvalue())
    local = data.index(b"PK\x03\x04", 1)  # the second member's local header
    data[local + 22 : local + 26] = struct.pack("<I", declared_bytes)
    central = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 1)
    data[central + 24 : central + 28] = struct.pack("<I", declared_bytes)
    return bytes(data)


def peak_while(call) -> int:
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_package_whose_header_lies_about_a_clip_is_refused_without_inflating_it(
    store: VoiceStore, tmp_path: Path
):
    package = tmp_path / "liar.zip"
    package.write_bytes(lying_package(actual_bytes=64 * 2**20, declared_bytes=1000))
    assert package.stat().st_size < 2**20

    def read() -> None:
        with pytest.raises(InvalidRequestError) as refused:
            store.read_package(package)
        assert refused.value.param == "package"

    assert peak_while(read) < 16 * 2**20  # inflated all 64 MB in one call before


def test_a_package_listing_many_members_is_refused_before_they_are_parsed(
    store: VoiceStore, tmp_path: Path
):
    package = tmp_path / "many.zip"
    with zipfile.ZipFile(package, "w") as archive:
        for index in range(20_000):
            archive.writestr(f"{index}", b"")

    def read() -> None:
        with pytest.raises(InvalidRequestError) as refused:
            store.read_package(package)
        assert (refused.value.param, refused.value.code) == ("package", "invalid_package")

    assert peak_while(read) < 4 * 2**20  # zipfile held every member's entry before


def test_a_package_holding_a_file_twice_is_refused(store: VoiceStore, tmp_path: Path):
    package = tmp_path / "twice.zip"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("profile.json", profile("one").model_dump_json())
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("profile.json", profile("two").model_dump_json())
    with pytest.raises(InvalidRequestError, match="twice"):
        store.read_package(package)
