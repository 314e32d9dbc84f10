"""The profile store: atomic, backed up before destructive changes, safe against bad packages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from voxserve.errors import ConflictError, InvalidRequestError, NotFoundError
from voxserve.voices.profile import VoiceProfile
from voxserve.voices.store import VoiceStore

AUDIO = b"RIFF-pretend-wav-bytes" * 100


@pytest.fixture
def store(tmp_path: Path) -> VoiceStore:
    return VoiceStore(tmp_path / "voices")


def profile(name: str, **fields) -> VoiceProfile:
    return VoiceProfile(id=name, display_name=name.title(), **fields)


def test_create_get_list_update(store: VoiceStore):
    created = store.create(profile("narrator", tags=["Books", "calm"]), AUDIO)
    assert created.has_reference and created.created_at > 0
    assert store.reference_path("narrator").read_bytes() == AUDIO
    store.create(profile("robot", tags=["fun"]))
    assert [p.id for p in store.list()] == ["narrator", "robot"]
    assert [p.id for p in store.list(tag="books")] == ["narrator"]
    updated = store.update("narrator", {"description": "Reads bedtime stories."})
    assert updated.description == "Reads bedtime stories." and updated.tags == ["books", "calm"]
    assert updated.updated_at >= created.updated_at
    assert store.get("narrator").description == "Reads bedtime stories."


@pytest.mark.parametrize(
    "name", ["../evil", "a/b", "a\\b", "..", "", "Has Space", "x" * 65, ".hidden"]
)
def test_unsafe_names_are_refused(store: VoiceStore, name: str):
    with pytest.raises((InvalidRequestError, ValueError)):
        store.create(VoiceProfile.model_construct(id=name, display_name="x"))
    with pytest.raises(InvalidRequestError) as caught:
        VoiceProfile(id=name, display_name="x")
    assert "name" in str(caught.value) or "invalid voice name" in str(caught.value)
    assert store.list() == []


def test_duplicates_and_unknown_profiles_are_clear_errors(store: VoiceStore):
    store.create(profile("narrator"))
    with pytest.raises(ConflictError, match="exists already"):
        store.create(profile("narrator"))
    with pytest.raises(NotFoundError):
        store.get("nobody")
    with pytest.raises(InvalidRequestError, match="cannot update id"):
        store.update("narrator", {"id": "other"})
    with pytest.raises(InvalidRequestError, match="speed"):
        store.update("narrator", {"defaults": {"speed": 9}})
    assert store.get("narrator").defaults.speed is None  # nothing half-applied


def test_delete_backs_up_first_and_restore_brings_it_back(store: VoiceStore):
    store.create(profile("narrator"), AUDIO)
    store.delete("narrator")
    assert store.find("narrator") is None
    assert not (store.profiles_dir / "narrator").exists()
    assert len(store.backups()) == 1
    store.restore()
    assert store.get("narrator").has_reference
    assert store.reference_path("narrator").read_bytes() == AUDIO
    assert len(store.backups()) == 2  # restoring backed up the state it replaced


def test_restore_from_a_named_backup_and_refuse_a_foreign_zip(store: VoiceStore, tmp_path: Path):
    store.create(profile("first"))
    older = store.backup()
    store.create(profile("second"))
    store.restore(older)
    assert [p.id for p in store.list()] == ["first"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("voices.db", b"")
        archive.writestr("../outside.txt", b"gotcha")
    with pytest.raises(InvalidRequestError, match="not a voxserve voice backup"):
        store.restore(evil)
    assert not (tmp_path / "outside.txt").exists()
    assert [p.id for p in store.list()] == ["first"]


def test_export_makes_a_package_that_reads_back(store: VoiceStore, tmp_path: Path):
    store.create(profile("narrator", transcript="Hello there."), AUDIO)
    package = store.export("narrator", tmp_path / "out")
    assert package.name == "narrator.zip"
    read, audio = store.read_package(package)
    assert (read.id, read.transcript, audio) == ("narrator", "Hello there.", AUDIO)


def make_package(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as package:
        for name, data in members.items():
            package.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"profile.json": b"{}", "../../escape.wav": b"x"}, "unexpected files"),
        ({"profile.json": b"{}", "/etc/passwd": b"x"}, "unexpected files"),
        ({"reference.wav": b"x"}, "no profile.json"),
        ({"profile.json": b"not json"}, "invalid"),
        ({"profile.json": b'{"id": "../x", "display_name": "x"}'}, "invalid"),
        ({"profile.json": b"{}", "reference.wav": bytes(51 * 2**20)}, "at most"),
    ],
)
def test_bad_packages_are_refused(store: VoiceStore, tmp_path: Path, members, message):
    package = make_package(tmp_path / "bad.zip", members)
    with pytest.raises(InvalidRequestError, match=message):
        store.read_package(package)
    assert not (tmp_path.parent / "escape.wav").exists()


def test_a_file_that_is_not_a_zip_is_refused(store: VoiceStore, tmp_path: Path):
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"definitely not a zip")
    with pytest.raises(InvalidRequestError, match="not a voice package"):
        store.read_package(bogus)


WRITER = """
import sys
from pathlib import Path
from voxserve.voices.profile import VoiceProfile
from voxserve.voices.store import VoiceStore
store = VoiceStore(Path(sys.argv[1]))
print("ready", flush=True)
n = 0
while True:
    n += 1
    store.create(VoiceProfile(id=f"v{n}", display_name="v"), b"x" * 200_000)
    store.update(f"v{n}", {"description": "changed"}, b"y" * 200_000)
    if n % 3 == 0:
        store.delete(f"v{n}")
"""


def test_a_crash_in_the_middle_of_writes_leaves_a_readable_store(tmp_path: Path):
    root = tmp_path / "voices"
    for delay in (0.3, 0.45, 0.6):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        store = VoiceStore(root)  # opens, sweeps what the crash left
        profiles = store.list()
        assert profiles, "the writer made progress before it was killed"
        for each in profiles:
            assert store.reference_path(each.id) is not None, each.id
        assert not list(root.rglob("*.part"))
        folders = {path.name for path in store.profiles_dir.iterdir()}
        assert folders == {each.id for each in profiles}
