"""A voice library from a folder of real clips (Piper's joe), through the library, the CLI and
the HTTP API: a profile per clip, transcripts from .txt or Whisper, bad clips reported and
skipped, nothing half-made kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from voxserve.api import synthesize_to_file
from voxserve.audio import create_encoder, fix_wav_header
from voxserve.cli import main
from voxserve.config import Settings
from voxserve.request import SpeechRequest
from voxserve.voices.folder_import import folder_files, import_clips, profile_name
from voxserve.voices.library import VoiceLibrary
from voxserve.voices.store import VoiceStore

ADA_SAYS = "Every evening she wrote a letter to her brother, though she never sent one."
BOB_SAYS = "The harbour lights came on one by one as the fishing boats returned."


def wav(samples: np.ndarray, rate: int = 22050) -> bytes:
    encoder = create_encoder("wav", rate)
    return fix_wav_header(encoder.encode(samples.astype(np.float32)) + encoder.finish())


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, piper_synthesizer) -> Path:
    """Two good clips (one with its transcript beside it), a silent one, a too-short one, a
    clip whose name clashes with another's, and a file that is no clip."""
    directory = tmp_path_factory.mktemp("voices-folder")
    for name, text in (("Ada Lovelace.flac", ADA_SAYS), ("bob.wav", BOB_SAYS)):
        synthesize_to_file(
            SpeechRequest(input=text), directory / name, synthesizer=piper_synthesizer
        )
    (directory / "Ada Lovelace.txt").write_text("Every evening she wrote a letter.\n")
    (directory / "quiet.wav").write_bytes(wav(np.zeros(22050 * 4)))
    short = np.sin(np.arange(11025) / 22050 * 2 * np.pi * 140) * 0.3
    (directory / "zz short.wav").write_bytes(wav(short))
    shutil.copy(directory / "bob.wav", directory / "ada lovelace.wav")
    (directory / "notes.md").write_text("# who is who\n")
    (directory / ".DS_Store").write_bytes(b"\0")
    return directory


@pytest.fixture
def library(tmp_path: Path) -> VoiceLibrary:
    settings = Settings(data_dir=tmp_path)
    return VoiceLibrary(VoiceStore(tmp_path / "voices"), settings)


def outcomes(results) -> dict[str, tuple[str, str | None]]:
    return {result.file: (result.outcome, result.voice) for result in results}


def test_names_come_from_file_names():
    assert profile_name("Ada Lovelace.wav") == "ada-lovelace"
    assert profile_name("narrator_01 (take 2).mp3") == "narrator_01-take-2"
    assert profile_name("---.wav") is None
    assert len(profile_name("x" * 90 + ".wav")) == 64


def test_a_folder_becomes_profiles_and_bad_clips_are_reported(folder, library):
    progress: list[tuple[int, int, str]] = []
    results = import_clips(
        library,
        folder_files(folder),
        fields={"tags": ["batch"]},
        progress=lambda *a: progress.append(a),
    )
    got = outcomes(results)
    assert got["Ada Lovelace.flac"] == ("created", "ada-lovelace")
    assert got["bob.wav"] == ("created", "bob")
    assert got["quiet.wav"][0] == got["zz short.wav"][0] == "failed"
    assert got["ada lovelace.wav"] == ("failed", "ada-lovelace")  # its name was taken in the batch
    assert got["notes.md"] == ("skipped", None) and ".DS_Store" not in got
    reasons = {result.file: result.reason for result in results}
    assert "silent" in reasons["quiet.wav"] and "at least 3 s" in reasons["zz short.wav"]
    assert "Ada Lovelace.flac" in reasons["ada lovelace.wav"]
    # Transcripts: the .txt where there is one, else what Whisper heard.
    ada, bob = library.store.get("ada-lovelace"), library.store.get("bob")
    assert ada.transcript == "Every evening she wrote a letter."
    assert "harbour" in bob.transcript.lower() or "harbor" in bob.transcript.lower()
    assert ada.tags == bob.tags == ["batch"] and ada.has_reference
    # Nothing half-made: only the two profiles exist, in the store and on disk.
    assert sorted(profile.id for profile in library.store.list()) == ["ada-lovelace", "bob"]
    assert [step[:2] for step in progress] == [(n, 5) for n in range(1, 6)]


def test_an_existing_profile_is_skipped_unless_replaced(folder, library, tmp_path):
    only_bob = tmp_path / "bob-only"
    only_bob.mkdir()
    shutil.copy(folder / "bob.wav", only_bob / "bob.wav")
    assert outcomes(import_clips(library, folder_files(only_bob)))["bob.wav"][0] == "created"
    again = import_clips(library, folder_files(only_bob))
    assert outcomes(again)["bob.wav"] == ("skipped", "bob") and "replace" in again[0].reason
    (only_bob / "bob.txt").write_text("A new transcript.")
    replaced = import_clips(library, folder_files(only_bob), replace=True)
    assert outcomes(replaced)["bob.wav"] == ("replaced", "bob")
    assert library.store.get("bob").transcript == "A new transcript."


def test_a_transcript_that_is_not_text_fails_its_clip_only(folder, library, tmp_path):
    directory = tmp_path / "latin1"
    directory.mkdir()
    shutil.copy(folder / "bob.wav", directory / "bob.wav")
    (directory / "bob.txt").write_bytes("caf\xe9".encode("latin-1"))
    (result,) = import_clips(library, folder_files(directory))
    assert result.outcome == "failed" and "UTF-8" in result.reason
    assert library.store.find("bob") is None


def test_the_command_imports_a_folder_and_fails_when_a_clip_did(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VOXSERVE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    result = runner.invoke(main, ["voices", "import-folder", str(folder), "--tags", "batch, cli"])
    assert result.exit_code == 1, result.output
    assert "2 created, 0 replaced, 1 skipped, 3 failed" in result.output
    listed = runner.invoke(main, ["voices", "list", "--tag", "cli"])
    assert "ada-lovelace" in listed.output and "bob" in listed.output


def test_the_api_takes_a_folder_uploaded_at_once(folder, server_url):
    files = [
        ("files", (f"my voices/{path.name}", path.read_bytes()))
        for path in sorted(folder.iterdir())
        if path.name in ("bob.wav", "quiet.wav", "Ada Lovelace.flac", "Ada Lovelace.txt")
    ]
    response = httpx.post(
        f"{server_url}/v1/audio/voices/import-folder",
        files=files,
        data={"tags": "uploaded", "replace": "true"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    got = {item["file"]: item["outcome"] for item in response.json()["results"]}
    assert got == {"Ada Lovelace.flac": "created", "bob.wav": "created", "quiet.wav": "failed"}
    voices = httpx.get(f"{server_url}/v1/audio/voices", params={"tag": "uploaded"}).json()
    assert sorted(voice["id"] for voice in voices["voices"]) == ["ada-lovelace", "bob"]


@pytest.mark.parametrize(
    ("data", "files", "param"),
    [
        ({"colour": "red"}, [("files", ("a.wav", b"x"))], "colour"),
        ({"replace": "maybe"}, [("files", ("a.wav", b"x"))], "replace"),
        ({}, [("clips", ("a.wav", b"x"))], "clips"),
    ],
)
def test_the_api_names_a_wrong_field(server_url, data, files, param):
    response = httpx.post(
        f"{server_url}/v1/audio/voices/import-folder", data=data, files=files, timeout=30
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_the_api_asks_for_the_files(server_url):
    form = b'--b\r\nContent-Disposition: form-data; name="tags"\r\n\r\nx\r\n--b--\r\n'
    response = httpx.post(
        f"{server_url}/v1/audio/voices/import-folder",
        content=form,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "files"
