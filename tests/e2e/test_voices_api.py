"""Voice profiles over HTTP, on the real server: upload, transcription, use, and bad input; the
library's admin operations (packages, backups) on a server of the fake engine's."""

from __future__ import annotations

import errno
import io
import itertools
import json
import os
import sqlite3
import tempfile
import uuid
import wave
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import starlette.formparsers

from tests.conftest import running
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.audio import create_encoder, fix_wav_header
from voxserve.server.app import create_app
from voxserve.server.uploads import FORM_FIELDS_BYTES, MAX_AUDIO_BYTES
from voxserve.voices.profile import VoiceProfile
from voxserve.voices.store import VoiceStore

FORM_LIMIT = MAX_AUDIO_BYTES + FORM_FIELDS_BYTES
CLIP_TEXT = "The quick brown fox jumps over the lazy dog. Please remember to bring your umbrella."


@pytest.fixture(scope="module")
def speech_clip(server_url: str) -> bytes:
    """About five seconds of real speech, as a WAV file."""
    response = httpx.post(
        f"{server_url}/v1/audio/speech",
        json={"input": CLIP_TEXT, "response_format": "wav", "stream": False},
        timeout=60,
    )
    assert response.status_code == 200
    return response.content


def wav_of(samples: np.ndarray, rate: int = 22050) -> bytes:
    encoder = create_encoder("wav", rate)
    return fix_wav_header(encoder.encode(samples.astype(np.float32)) + encoder.finish())


def create(server_url: str, name: str, audio: bytes, **fields) -> httpx.Response:
    """A multipart upload, as OpenAI's custom voices API takes it."""
    files = {"audio_sample": ("clip.wav", audio, "audio/wav")}
    return httpx.post(
        f"{server_url}/v1/audio/voices", data={"name": name, **fields}, files=files, timeout=60
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_an_uploaded_clip_becomes_a_profile_with_a_transcript(server_url, speech_clip):
    name = unique("narrator")
    response = create(server_url, name, speech_clip, display="The Narrator", tags="books, calm")
    assert response.status_code == 201, response.text
    profile = response.json()
    assert (profile["id"], profile["display_name"], profile["tags"]) == (
        name, "The Narrator", ["books", "calm"],
    )  # fmt: skip
    assert profile["has_reference"] is True
    assert "quick brown fox" in profile["transcript"].lower()

    listed = httpx.get(f"{server_url}/v1/audio/voices").json()["voices"]
    assert {"id": name, "type": "profile"}.items() <= next(
        v for v in listed if v["id"] == name
    ).items()
    assert any(v["id"] == "joe" and v["type"] == "builtin" for v in listed)
    tagged = httpx.get(f"{server_url}/v1/audio/voices", params={"tag": "books"}).json()["voices"]
    assert name in [v["id"] for v in tagged]

    sample = httpx.get(f"{server_url}/v1/audio/voices/{name}/sample")
    with wave.open(io.BytesIO(sample.content)) as clip:
        assert clip.getframerate() == 24000 and 3.0 < clip.getnframes() / 24000 < 8.0

    # Piper cannot clone: a cloned profile is refused, naming who can.
    spoken = httpx.post(f"{server_url}/v1/audio/speech", json={"input": "Hi.", "voice": name})
    assert spoken.status_code == 400
    assert spoken.json()["error"]["code"] == "cloning_not_supported"
    assert "engines that can" in spoken.json()["error"]["message"]


def test_a_profile_that_names_an_engine_voice_speaks_with_its_defaults(server_url):
    name = unique("quick")
    response = httpx.post(
        f"{server_url}/v1/audio/voices",
        json={"name": name, "voice": "joe", "defaults": {"speed": 1.6}, "description": "Fast."},
    )
    assert response.status_code == 201, response.text
    text = {"input": "This sentence is spoken by a profile.", "response_format": "pcm"}
    quick = httpx.post(f"{server_url}/v1/audio/speech", json={**text, "voice": name})
    plain = httpx.post(f"{server_url}/v1/audio/speech", json={**text, "voice": "joe"})
    assert quick.status_code == 200
    assert len(quick.content) < 0.8 * len(plain.content)  # the profile's speed applied

    patched = httpx.patch(f"{server_url}/v1/audio/voices/{name}", json={"tags": ["Fast"]})
    assert patched.json()["tags"] == ["fast"]
    assert httpx.get(f"{server_url}/v1/audio/voices/{name}").json()["tags"] == ["fast"]
    deleted = httpx.delete(f"{server_url}/v1/audio/voices/{name}")
    assert deleted.json() == {"id": name, "object": "voice", "deleted": True}
    assert httpx.get(f"{server_url}/v1/audio/voices/{name}").status_code == 404


def test_built_in_voices_have_samples(server_url):
    sample = httpx.get(f"{server_url}/v1/audio/voices/joe/sample", timeout=60)
    assert sample.status_code == 200 and sample.headers["content-type"] == "audio/wav"
    assert httpx.get(f"{server_url}/v1/audio/voices/joe").json()["type"] == "builtin"


@pytest.mark.parametrize(
    ("name", "audio", "status", "code"),
    [
        ("bad/name", None, 400, "invalid_name"),
        ("..", None, 400, "invalid_name"),
        ("joe", None, 409, "voice_exists"),
        ("alloy", None, 409, "voice_exists"),
        ("not-audio", b"this is not audio at all" * 100, 400, "invalid_audio"),
        ("silence", wav_of(np.zeros(22050 * 5)), 400, "audio_silent"),
        ("too-short", "short", 400, "audio_too_short"),
    ],
)
def test_bad_uploads_say_what_to_fix(server_url, speech_clip, name, audio, status, code):
    if audio == "short":
        with wave.open(io.BytesIO(speech_clip)) as clip:
            rate = clip.getframerate()
            frames = np.frombuffer(clip.readframes(rate), dtype="<i2") / 32768
        audio = wav_of(frames, rate)
    before = httpx.get(f"{server_url}/v1/audio/voices").json()["voices"]
    if audio is None:
        response = httpx.post(f"{server_url}/v1/audio/voices", json={"name": name})
    else:
        response = create(server_url, name, audio)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert httpx.get(f"{server_url}/v1/audio/voices").json()["voices"] == before


def test_duplicate_and_unknown_fields(server_url):
    name = unique("twin")
    assert httpx.post(f"{server_url}/v1/audio/voices", json={"name": name}).status_code == 201
    again = httpx.post(f"{server_url}/v1/audio/voices", json={"name": name})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "voice_exists")
    odd = httpx.post(
        f"{server_url}/v1/audio/voices", data={"name": unique("odd"), "colour": "blue"},
        files={"audio_sample": ("x.wav", b"", "audio/wav")},
    )  # fmt: skip
    assert odd.status_code == 400 and odd.json()["error"]["param"] == "colour"
    assert httpx.post(f"{server_url}/v1/audio/voices", json={}).json()["error"]["param"] == "name"
    for route_word in ("backups", "import", "restore", "backup"):  # their paths are routes
        taken = httpx.post(f"{server_url}/v1/audio/voices", json={"name": route_word})
        assert (taken.status_code, taken.json()["error"]["param"]) == (409, "name")


# --- the library's admin operations: packages and backups -----------------------------------


@pytest.fixture
def fake_url(tmp_path: Path):
    """A server of its own on the fake engine: what a test imports or restores is its alone."""
    with running(create_app(synthesizer=make_synthesizer(FakeEngine(), data_dir=tmp_path))) as url:
        yield url


def tone_clip(seconds: float = 4.0, rate: int = 22050) -> bytes:
    """A warbling tone: audio that passes the reference checks without a speech engine."""
    time = np.arange(int(seconds * rate)) / rate
    return wav_of(0.3 * np.sin(2 * np.pi * 220 * time) * (1 + 0.3 * np.sin(2 * np.pi * 3 * time)))


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        for name, data in members.items():
            package.writestr(name, data)
    return buffer.getvalue()


def import_package(url: str, package: bytes, **fields: str) -> httpx.Response:
    files = {"package": ("voice.zip", package, "application/zip")}
    return httpx.post(f"{url}/v1/audio/voices/import", data=fields, files=files, timeout=60)


def without_times(profile: dict) -> dict:
    return {key: value for key, value in profile.items() if key not in ("created_at", "updated_at")}


PROFILE_JSON = json.dumps({"id": "packed", "display_name": "Packed", "transcript": "A tone."})


def test_an_exported_profile_imports_back_the_same(fake_url):
    created = create(fake_url, "grandpa", tone_clip(), display="Grandpa", tags="family",
                     transcript="A warbling tone.", defaults='{"speed": 0.9}')  # fmt: skip
    assert created.status_code == 201, created.text
    voice = f"{fake_url}/v1/audio/voices/grandpa"
    exported = httpx.get(f"{voice}/export")
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/zip"
    assert exported.headers["content-disposition"] == 'attachment; filename="grandpa.zip"'
    audio = httpx.get(f"{voice}/sample").content
    assert httpx.delete(voice).status_code == 200

    imported = import_package(fake_url, exported.content)
    assert imported.status_code == 201, imported.text
    assert without_times(imported.json()) == without_times(created.json())
    assert without_times(httpx.get(voice).json()) == without_times(created.json())
    assert httpx.get(f"{voice}/sample").content == audio  # not faded and levelled again

    again = import_package(fake_url, exported.content)
    assert again.status_code == 409
    assert (again.json()["error"]["code"], again.json()["error"]["param"]) == (
        "voice_exists", "package",
    )  # fmt: skip
    assert httpx.patch(voice, json={"display_name": "Changed"}).status_code == 200
    replaced = import_package(fake_url, exported.content, replace="true")
    assert replaced.status_code == 201, replaced.text
    assert httpx.get(voice).json()["display_name"] == "Grandpa"
    assert httpx.get(f"{voice}/sample").content == audio


def test_a_packaged_clip_is_prepared_like_an_upload(fake_url):
    clip = tone_clip(rate=22050)
    package = zipped({"profile.json": PROFILE_JSON.encode(), "reference.wav": clip})
    imported = import_package(fake_url, package)
    assert imported.status_code == 201, imported.text
    sample = httpx.get(f"{fake_url}/v1/audio/voices/packed/sample").content
    with wave.open(io.BytesIO(sample)) as stored:
        assert stored.getframerate() == 24000  # resampled, as an uploaded clip is


@pytest.mark.parametrize(
    ("members", "code", "said"),
    [
        ({"profile.json": PROFILE_JSON, "../../evil.sh": "rm -rf ~"}, "invalid_package",
         "unexpected files: ../../evil.sh"),
        ({"profile.json": PROFILE_JSON, "reference.wav": "not audio at all" * 100},
         "invalid_audio", "reference.wav"),
        ({"reference.wav": "x"}, "invalid_package", "no profile.json"),
        ({"profile.json": json.dumps({"id": "odd", "display_name": "Odd", "voice": "/etc/x"})},
         "voice_not_found", "profile.json: unknown voice '/etc/x'"),
        (None, "invalid_package", "not a voice package"),
    ],
)  # fmt: skip
def test_a_bad_package_is_refused_and_stores_nothing(fake_url, tmp_path, members, code, said):
    before = httpx.get(f"{fake_url}/v1/audio/voices").json()["voices"]
    package = b"PK not a zip" if members is None else zipped(
        {name: data.encode() for name, data in members.items()}
    )  # fmt: skip
    response = import_package(fake_url, package)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, "package")
    assert said in error["message"]
    assert httpx.get(f"{fake_url}/v1/audio/voices").json()["voices"] == before
    assert not list(tmp_path.parent.rglob("evil.sh"))


def test_an_import_names_its_wrong_fields(fake_url):
    package = zipped({"profile.json": PROFILE_JSON.encode()})
    odd = import_package(fake_url, package, replace="maybe")
    assert (odd.status_code, odd.json()["error"]["param"]) == (400, "replace")
    unknown = import_package(fake_url, package, colour="blue")
    assert (unknown.status_code, unknown.json()["error"]["param"]) == (400, "colour")
    missing = httpx.post(f"{fake_url}/v1/audio/voices/import", json={"package": "voice.zip"})
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "missing_package"


def test_an_oversized_package_is_refused_as_it_arrives(fake_url):
    url = f"{fake_url}/v1/audio/voices/import"
    declared = import_package(fake_url, b"\0" * (FORM_LIMIT + 1))
    assert declared.status_code == 413
    assert (declared.json()["error"]["code"], declared.json()["error"]["param"]) == (
        "upload_too_large", "package",
    )  # fmt: skip
    # Chunked, the body declares no length: it is counted as it comes.
    head = (b"--b\r\nContent-Disposition: form-data; name=\"package\"; filename=\"p.zip\"\r\n"
            b"Content-Type: application/zip\r\n\r\n")  # fmt: skip
    megabytes = itertools.repeat(b"\0" * 2**20, FORM_LIMIT // 2**20 + 1)
    chunked = httpx.post(
        url, content=itertools.chain([head], megabytes),
        headers={"content-type": "multipart/form-data; boundary=b"}, timeout=60,
    )  # fmt: skip
    assert chunked.status_code == 413
    assert chunked.json()["error"]["param"] == "package"


def test_a_backup_brings_a_deleted_profile_back(fake_url, tmp_path):
    voices = f"{fake_url}/v1/audio/voices"
    assert httpx.post(voices, json={"name": "narrator", "voice": "tone"}).status_code == 201
    taken = httpx.post(f"{voices}/backup")
    assert taken.status_code == 201
    name = taken.json()["backup"]
    assert name.startswith("voices-") and name.endswith(".zip")
    listing = httpx.get(f"{voices}/backups")
    listed = listing.json()["backups"]
    assert listed[0] == taken.json() and listed[0]["size"] > 0
    assert str(tmp_path) not in listing.text and all("/" not in b["backup"] for b in listed)

    assert httpx.delete(f"{voices}/narrator").status_code == 200
    assert httpx.get(f"{voices}/narrator").status_code == 404
    restored = httpx.post(f"{voices}/restore", json={"backup": name})
    assert restored.status_code == 200, restored.text
    assert restored.json() == {"backup": name, "restored": True}
    assert httpx.get(f"{voices}/narrator").json()["voice"] == "tone"

    # Without a name, the newest: the one the delete took, before it deleted.
    assert httpx.delete(f"{voices}/narrator").status_code == 200
    newest = httpx.get(f"{voices}/backups").json()["backups"][0]["backup"]
    assert httpx.post(f"{voices}/restore").json() == {"backup": newest, "restored": True}
    assert httpx.get(f"{voices}/narrator").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"backup": "voices-20000101-000000-000000000.zip"}, 404, "backup"),
        ({"backup": "../x"}, 400, "backup"),
        ({"backup": "/etc/passwd"}, 400, "backup"),
        ({"backup": 7}, 400, "backup"),
        ({"from": "latest"}, 400, "from"),
        ({}, 404, "backup"),  # no backup taken yet
    ],
)
def test_a_restore_names_only_a_listed_backup(fake_url, body, status, param):
    voices = f"{fake_url}/v1/audio/voices"
    assert httpx.post(voices, json={"name": "kept", "voice": "tone"}).status_code == 201
    refused = httpx.post(f"{voices}/restore", json=body)
    assert refused.status_code == status, refused.text
    assert refused.json()["error"]["param"] == param
    assert httpx.get(f"{voices}/kept").status_code == 200
    assert httpx.get(f"{voices}/backups").json() == {"backups": []}  # none taken: nothing ran


# --- what a profile names is checked when it is saved ---------------------------------------


def test_a_profile_names_only_installed_engines_and_their_voices(fake_url):
    voices = f"{fake_url}/v1/audio/voices"
    for fields, param in [
        ({"voice": "/etc/passwd"}, "voice"),
        ({"voice": "joe", "engine": "fake"}, "voice"),  # a voice, but of another engine
        ({"engine": "nope"}, "engine"),
        ({"engine": 5}, "engine"),
        ({"name": 5}, "name"),
    ]:
        refused = httpx.post(voices, json={"name": "bad", **fields})
        assert refused.status_code == 400, (fields, refused.text)
        assert refused.json()["error"]["param"] == param, fields
    # Before any audio work: junk audio would be answered as invalid_audio otherwise.
    upload = create(fake_url, "bad", b"junk", engine="nope")
    assert (upload.status_code, upload.json()["error"]["param"]) == (400, "engine")
    assert httpx.get(f"{voices}/bad").status_code == 404
    assert httpx.get(f"{voices}/5").status_code == 404

    assert httpx.post(voices, json={"name": "good", "voice": "low"}).status_code == 201
    patched = httpx.patch(f"{voices}/good", json={"voice": "/etc/passwd"})
    assert (patched.status_code, patched.json()["error"]["param"]) == (400, "voice")
    assert httpx.get(f"{voices}/good").json()["voice"] == "low"


def test_a_number_too_long_in_defaults_is_a_400_naming_it(fake_url):
    digits = "1" * 5001
    body = '{"name": "seeded", "defaults": {"seed": ' + digits + "}}"
    as_json = httpx.post(f"{fake_url}/v1/audio/voices", content=body)
    assert as_json.status_code == 400, as_json.text
    assert as_json.json()["error"]["param"] == "defaults.seed"
    as_form = create(fake_url, "seeded", tone_clip(), defaults='{"seed": ' + digits + "}")
    assert as_form.status_code == 400, as_form.text
    assert as_form.json()["error"]["param"] == "defaults.seed"


# --- a full disk, a damaged store, a bad backup ----------------------------------------------


def test_a_full_disk_is_a_507_that_says_so_and_leaves_nothing(fake_url, tmp_path, monkeypatch):
    def fsync(descriptor: int) -> None:  # where a full disk shows at the latest
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)  # the server runs in this process
    refused = create(fake_url, "narrator", tone_clip(), transcript="A tone.")
    monkeypatch.undo()
    assert refused.status_code == 507, refused.text  # a bare 500 before
    error = refused.json()["error"]
    assert error["code"] == "insufficient_storage" and "disk is full" in error["message"]
    assert str(tmp_path) not in error["message"]
    assert refused.headers["x-should-retry"] == "false"  # it stays full while a client retries
    assert httpx.get(f"{fake_url}/v1/audio/voices/narrator").status_code == 404
    assert list((tmp_path / "voices" / "profiles").iterdir()) == []  # no orphan folder


def test_a_full_disk_while_an_upload_is_spooled_is_a_507(fake_url, monkeypatch):
    class FullDisk(tempfile.SpooledTemporaryFile):
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", FullDisk)
    refused = create(fake_url, "narrator", tone_clip(), transcript="A tone.")
    monkeypatch.undo()
    assert refused.status_code == 507, refused.text  # a bare 500 before
    assert refused.json()["error"]["code"] == "insufficient_storage"


def test_a_damaged_store_still_serves_speech_and_a_restore_repairs_it(tmp_path):
    store = VoiceStore(tmp_path / "voices")
    store.create(VoiceProfile(id="narrator", display_name="Narrator", voice="tone"))
    store.backup()
    (tmp_path / "voices" / "voices.db").write_bytes(b"not a database" * 100)
    app = create_app(synthesizer=make_synthesizer(FakeEngine(), data_dir=tmp_path))
    with running(app) as url:  # did not start before
        voices = f"{url}/v1/audio/voices"
        spoken = httpx.post(f"{url}/v1/audio/speech", json={"input": "Still here."})
        assert spoken.status_code == 200 and spoken.content
        listed = httpx.get(voices).json()["voices"]
        assert listed and not [voice for voice in listed if voice["type"] == "profile"]
        refused = httpx.post(voices, json={"name": "other", "voice": "tone"})
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"]["code"] == "store_read_only"
        assert "read-only" in refused.json()["error"]["message"]

        assert httpx.post(f"{voices}/restore").status_code == 200
        assert httpx.get(f"{voices}/narrator").json()["voice"] == "tone"
        assert httpx.post(voices, json={"name": "other", "voice": "tone"}).status_code == 201


def sqlite_bytes(path: Path, rows: list[tuple[str, str]]) -> bytes:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE profiles (id TEXT PRIMARY KEY, data TEXT NOT NULL, "
                   "created_at REAL NOT NULL, updated_at REAL NOT NULL)")  # fmt: skip
        db.executemany("INSERT INTO profiles VALUES (?, ?, 0, 0)", rows)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        (None, "not a database SQLite can read"),
        ([("../../etc", '{"id": "etc", "display_name": "Etc"}')], "'../../etc' holds no valid"),
    ],
)
def test_a_bad_backup_is_refused_and_the_store_goes_on(fake_url, tmp_path, rows, said):
    voices = f"{fake_url}/v1/audio/voices"
    assert httpx.post(voices, json={"name": "kept", "voice": "tone"}).status_code == 201
    database = b"garbage" * 100 if rows is None else sqlite_bytes(tmp_path / "bad.db", rows)
    backups = tmp_path / "voices" / "backups"
    backups.mkdir(exist_ok=True)
    (backups / "voices-29990101-000000-000000000.zip").write_bytes(zipped({"voices.db": database}))
    refused = httpx.post(f"{voices}/restore")  # the newest: the bad one ("restored" before)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_backup", "backup")
    assert said in error["message"]
    assert httpx.get(f"{voices}/kept").status_code == 200
    assert len(httpx.get(f"{voices}/backups").json()["backups"]) == 1  # nothing backed up
