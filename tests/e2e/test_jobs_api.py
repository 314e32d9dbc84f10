"""Audiobook jobs over HTTP on the real server (Piper's joe): made, followed by SSE, paused,
resumed, cancelled, downloaded with their chapters; bad input refused naming the field; and a
server killed with SIGKILL mid-book that goes on from where it was when started again."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import pytest

from tests.audio.signals import sine, wav_bytes
from tests.conftest import free_port, serving

BOOK = """# Arrival

The train came in late, and the platform was nearly empty.

She stepped down with one small bag.

# Home

The door was open, and the lamp was lit.
"""
LONG_BOOK = "# One\n\n" + "\n\n".join(
    f"This is paragraph number {n}, and it goes on for a little while." for n in range(1, 31)
)


def submit(url: str, document: str = BOOK, name: str = "book.md", **fields) -> httpx.Response:
    files = {"file": (name, document.encode(), "text/markdown")}
    return httpx.post(f"{url}/v1/jobs", files=files, data=fields, timeout=30)


def wait_for(url: str, job_id: str, *states: str, within: float = 120) -> dict:
    deadline = time.monotonic() + within
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in states:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def chapters_of(data: bytes) -> list[tuple[str, float]]:
    with av.open(io.BytesIO(data)) as container:
        return [
            (c["metadata"]["title"], round(float(c["start"] * c["time_base"]), 2))
            for c in container.chapters()
        ]


def test_a_book_job_is_made_followed_and_downloaded(server_url):
    created = submit(server_url, voice="joe", response_format="m4b")
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    events = []
    with httpx.stream("GET", f"{server_url}/v1/jobs/{job_id}/events", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "done"
    done = [event["progress"].get("pieces_done", 0) for event in events]
    assert done == sorted(done) and done[-1] == 3
    job = httpx.get(f"{server_url}/v1/jobs/{job_id}").json()
    assert [c["title"] for c in job["chapters"]] == ["Arrival", "Home"]
    book = httpx.get(f"{server_url}/v1/jobs/{job_id}/audio", timeout=30)
    assert book.status_code == 200 and book.headers["content-type"] == "audio/mp4"
    assert [title for title, _ in chapters_of(book.content)] == ["Arrival", "Home"]
    chapter = httpx.get(f"{server_url}/v1/jobs/{job_id}/chapters/2/audio", timeout=30)
    assert chapter.status_code == 200 and chapters_of(chapter.content) == [("Home", 0.0)]
    assert httpx.get(f"{server_url}/v1/jobs/{job_id}/chapters/9/audio").status_code == 404
    listed = httpx.get(f"{server_url}/v1/jobs").json()["data"]
    assert job_id in [entry["id"] for entry in listed]
    assert httpx.delete(f"{server_url}/v1/jobs/{job_id}").json()["deleted"] is True
    assert httpx.get(f"{server_url}/v1/jobs/{job_id}").status_code == 404


def test_a_job_pauses_resumes_and_cancels(server_url):
    job_id = submit(server_url, LONG_BOOK).json()["id"]
    paused = httpx.post(f"{server_url}/v1/jobs/{job_id}/pause", timeout=30)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    refused = httpx.get(f"{server_url}/v1/jobs/{job_id}/audio")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_not_done"
    again = httpx.post(f"{server_url}/v1/jobs/{job_id}/pause")
    assert again.status_code == 409  # a paused job is not paused twice
    assert httpx.post(f"{server_url}/v1/jobs/{job_id}/resume").json()["status"] == "queued"
    wait_for(server_url, job_id, "running", "done")
    cancelled = httpx.post(f"{server_url}/v1/jobs/{job_id}/cancel", timeout=30).json()
    assert cancelled["status"] == "cancelled"
    assert httpx.post(f"{server_url}/v1/jobs/{job_id}/resume").status_code == 409


def test_a_finished_chapter_downloads_before_the_book_is_done(server_url):
    document = "# Short\n\nOne line to begin with.\n\n" + LONG_BOOK.replace("# One", "# Long")
    job_id = submit(server_url, document).json()["id"]
    deadline = time.monotonic() + 60
    while not (job := httpx.get(f"{server_url}/v1/jobs/{job_id}").json())["chapters"]:
        assert time.monotonic() < deadline and job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    assert job["status"] == "running" and job["progress"]["chapters_total"] == 2
    assert [(c["number"], c["title"]) for c in job["chapters"]] == [(1, "Short")]
    first = httpx.get(f"{server_url}/v1/jobs/{job_id}/chapters/1/audio", timeout=30)
    assert first.status_code == 200 and chapters_of(first.content) == [("Short", 0.0)]
    not_yet = httpx.get(f"{server_url}/v1/jobs/{job_id}/chapters/2/audio")
    assert not_yet.status_code == 409 and not_yet.json()["error"]["code"] == "job_not_done"
    assert httpx.get(f"{server_url}/v1/jobs/{job_id}/chapters/3/audio").status_code == 404
    httpx.post(f"{server_url}/v1/jobs/{job_id}/cancel", timeout=30)
    assert httpx.get(f"{server_url}/v1/jobs/{job_id}/chapters/1/audio").status_code == 404


@pytest.mark.parametrize(
    ("fields", "name", "document", "param"),
    [
        ({"response_format": "ogg"}, "b.md", BOOK, "response_format"),
        ({"loudness": "loud"}, "b.md", BOOK, "loudness"),
        ({"speed": "9"}, "b.md", BOOK, "speed"),
        ({"colour": "red"}, "b.md", BOOK, "colour"),
        ({"chapter_pattern": "(open"}, "b.txt", BOOK, "chapter_pattern"),
        ({}, "b.epub", "not a zip", "file"),
    ],
)
def test_bad_jobs_are_refused_naming_the_field(server_url, fields, name, document, param):
    response = submit(server_url, document, name, **fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def tone_wav(seconds: float, level: float) -> bytes:
    return wav_bytes(sine(220, seconds, 22050, amplitude=level), 22050)


def test_a_book_with_a_music_bed_has_the_music_under_it_and_after(server_url):
    files = {
        "file": ("book.md", BOOK.encode(), "text/markdown"),
        "music": ("bed.wav", tone_wav(2.0, 0.5), "audio/wav"),
    }
    data = {"music_level_db": "-24", "music_fade_out": "2", "response_format": "mp3"}
    created = httpx.post(f"{server_url}/v1/jobs", files=files, data=data, timeout=30)
    assert created.status_code == 202, created.text
    job = wait_for(server_url, created.json()["id"], "done", "failed")
    assert job["status"] == "done" and job["options"]["music"]["level_db"] == -24
    book = httpx.get(f"{server_url}/v1/jobs/{job['id']}/audio", timeout=30).content
    with av.open(io.BytesIO(book)) as container:
        duration = container.duration / 1e6
    assert duration == pytest.approx(job["progress"]["audio_seconds"] + 2, abs=0.3)  # the tail


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ({"music": ("bed.wav", b"not audio", "audio/wav")}, {}, "music"),
        ({}, {"music_level_db": "-20"}, "music_level_db"),
        (
            {"music": ("bed.wav", tone_wav(1, 0.5), "audio/wav")},
            {"music_duck_db": "3"},
            "music_duck_db",
        ),
    ],
)
def test_bad_music_is_refused_naming_the_field(server_url, files, data, param):
    files = {"file": ("book.md", BOOK.encode(), "text/markdown"), **files}
    response = httpx.post(f"{server_url}/v1/jobs", files=files, data=data, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_text_job_in_json_and_an_unknown_job(server_url):
    created = httpx.post(
        f"{server_url}/v1/jobs", json={"input": "Short and sweet.", "response_format": "mp3"}
    )
    assert created.status_code == 202, created.text
    job = wait_for(server_url, created.json()["id"], "done")
    assert job["progress"]["pieces_total"] == 1
    assert httpx.get(f"{server_url}/v1/jobs/nope").status_code == 404
    assert httpx.post(f"{server_url}/v1/jobs", json={}).json()["error"]["param"] == "input"


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VOXSERVE_")}
    environment.update(VOXSERVE_DATA_DIR=str(data_dir), VOXSERVE_LOG_LEVEL="warning")
    return subprocess.Popen(
        [sys.executable, "-m", "voxserve", "serve", "--port", str(port)], env=environment
    )


def test_a_server_killed_mid_book_goes_on_where_it_was(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(tmp_path, port)
    with serving(process, url + "/health"):
        job_id = submit(url, LONG_BOOK).json()["id"]
        pieces = tmp_path / "jobs" / job_id / "pieces"
        deadline = time.monotonic() + 120
        while len(list(pieces.glob("*.wav"))) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        made_before = len(list(pieces.glob("*.wav")))
        assert status_in_database(tmp_path, job_id) == "running"  # as it was when killed
    process = start_server(tmp_path, port)
    with serving(process, url + "/health"):
        job = wait_for(url, job_id, "done", "failed")
        assert job["status"] == "done", job["error"]
        progress = job["progress"]
        assert progress["pieces_done"] == progress["pieces_total"] == 30
        # Only what the first run had not finished was spoken again: the piece in flight when
        # it was killed (kept as a .part, never as a piece) and the ones never begun.
        assert progress["pieces_made"] == 30 - made_before
        book = httpx.get(f"{url}/v1/jobs/{job_id}/audio", timeout=30)
        with av.open(io.BytesIO(book.content)) as container:
            # The book is its pieces end to end, made before the kill or after: within two AAC
            # frames (the encoder's priming and its last frame's padding) of their summed length.
            frame = 1024 / container.streams.audio[0].sample_rate
            assert abs(container.duration / 1e6 - progress["audio_seconds"]) <= 2 * frame
        assert not pieces.exists()


def status_in_database(data_dir: Path, job_id: str) -> str:
    import sqlite3

    with contextlib.closing(sqlite3.connect(data_dir / "jobs.db")) as db:
        (data,) = db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return json.loads(data)["status"]
