"""The verified downloader against a loopback HTTP server: whole files only, resumed when cut."""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading

import pytest
from rich.console import Console

from tests.conftest import FileServer
from voxserve import download_progress
from voxserve.downloads import download
from voxserve.errors import EngineUnavailableError

MODEL = bytes(range(256)) * 4096  # 1 MiB: several blocks
MODEL_SHA = hashlib.sha256(MODEL).hexdigest()


@pytest.fixture
def origin(file_server: tuple[FileServer, str]) -> tuple[FileServer, str]:
    state, url = file_server
    state.files |= {"/model.onnx": MODEL, "/corrupt.onnx": MODEL[:-1] + b"\x00"}
    return state, url


def test_a_good_file_is_verified_put_in_place_and_not_fetched_again(origin, tmp_path):
    state, url = origin
    path = tmp_path / "models" / "model.onnx"
    seen: list[tuple[int, int | None]] = []
    assert download(f"{url}/model.onnx", path, MODEL_SHA, progress=lambda *a: seen.append(a))
    assert path.read_bytes() == MODEL
    assert not (tmp_path / "models" / "model.onnx.part").exists()
    assert seen[0] == (0, len(MODEL)) and seen[-1] == (len(MODEL), len(MODEL))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    download(f"{url}/model.onnx", path, MODEL_SHA.upper())
    assert len(state.requests) == 1  # the file in place, checked, was not fetched again


def test_a_corrupt_download_leaves_no_file_and_names_both_digests(origin, tmp_path):
    _, url = origin
    path = tmp_path / "model.onnx"
    with pytest.raises(EngineUnavailableError) as caught:
        download(f"{url}/corrupt.onnx", path, MODEL_SHA)
    got = hashlib.sha256(MODEL[:-1] + b"\x00").hexdigest()
    assert MODEL_SHA in caught.value.message and got in caught.value.message
    assert caught.value.code == "download_corrupt"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == []


def test_a_cut_download_keeps_its_part_and_the_next_call_resumes_it(origin, tmp_path):
    state, url = origin
    path = tmp_path / "model.onnx"
    state.cut_after = 300_000
    with pytest.raises(EngineUnavailableError) as caught:
        download(f"{url}/model.onnx", path, MODEL_SHA)
    assert caught.value.code == "download_interrupted"
    assert f"after 300000 of {len(MODEL)} bytes" in caught.value.message
    assert not path.exists()
    part = tmp_path / "model.onnx.part"
    assert part.read_bytes() == MODEL[:300_000]
    seen: list[tuple[int, int | None]] = []
    download(f"{url}/model.onnx", path, MODEL_SHA, progress=lambda *a: seen.append(a))
    assert path.read_bytes() == MODEL and not part.exists()
    assert state.requests[-1][1] == "bytes=300000-"  # only the rest was asked for
    assert seen[0] == (300_000, len(MODEL))


def test_a_server_that_ignores_range_is_downloaded_again_whole(origin, tmp_path):
    state, url = origin
    state.ignore_range = True
    path = tmp_path / "model.onnx"
    (tmp_path / "model.onnx.part").write_bytes(b"stale bytes of some other file")
    download(f"{url}/model.onnx", path, MODEL_SHA)
    assert state.requests[-1][1] == "bytes=30-"  # asked for the rest, got the whole (200)
    assert path.read_bytes() == MODEL


def test_a_whole_part_is_put_in_place_without_fetching_it_again(origin, tmp_path):
    # Interrupted after the last byte was written and before the rename: the server has
    # nothing after it (416), and the part, verified, is the file.
    state, url = origin
    (tmp_path / "model.onnx.part").write_bytes(MODEL)
    download(f"{url}/model.onnx", tmp_path / "model.onnx", MODEL_SHA)
    assert (tmp_path / "model.onnx").read_bytes() == MODEL
    assert state.requests[-1][1] == f"bytes={len(MODEL)}-"


def test_a_different_file_in_place_is_refused_and_left_alone(origin, tmp_path):
    state, url = origin
    path = tmp_path / "model.onnx"
    path.write_bytes(b"the user's own model")
    with pytest.raises(EngineUnavailableError) as caught:
        download(f"{url}/model.onnx", path, MODEL_SHA)
    assert caught.value.code == "download_conflict" and str(path) in caught.value.message
    assert path.read_bytes() == b"the user's own model" and state.requests == []


def test_errors_never_show_the_urls_credentials(origin, tmp_path):
    state, url = origin
    secret_url = url.replace("http://", "http://someone:hunter2@")
    with pytest.raises(EngineUnavailableError) as caught:
        download(f"{secret_url}/missing.onnx", tmp_path / "missing.onnx", MODEL_SHA)
    assert "404" in caught.value.message and "missing.onnx" in caught.value.message
    assert "hunter2" not in caught.value.message and "***@" in caught.value.message
    assert state.requests[-1][2].startswith("Basic ")  # sent as basic auth, not in the URL


def test_an_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(EngineUnavailableError) as caught:
        download("http://127.0.0.1:9/model.onnx", tmp_path / "model.onnx", MODEL_SHA)
    assert caught.value.code == "download_failed" and "127.0.0.1:9" in caught.value.message
    assert not (tmp_path / "model.onnx").exists()


def test_downloads_without_a_callback_report_to_the_processs_reporter(origin, tmp_path):
    _, url = origin
    reported: list[tuple[str, int, int | None]] = []

    def reporter(name: str):
        return contextlib.nullcontext(lambda done, total: reported.append((name, done, total)))

    download_progress.report_with(reporter)
    try:
        download(f"{url}/model.onnx", tmp_path / "model.onnx", MODEL_SHA)
    finally:
        download_progress.report_with(None)
    assert reported[-1] == ("model.onnx", len(MODEL), len(MODEL))


def test_concurrent_downloads_of_one_file_fetch_it_once(origin, tmp_path):
    state, url = origin
    path = tmp_path / "model.onnx"
    threads = [
        threading.Thread(target=download, args=(f"{url}/model.onnx", path, MODEL_SHA))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert path.read_bytes() == MODEL and len(state.requests) == 1


@pytest.mark.parametrize("terminal", [True, False])
def test_the_terminal_bar_shows_a_download_on_a_terminal_only(terminal):
    output = io.StringIO()
    console = Console(file=output, force_terminal=terminal, width=100)
    with download_progress.terminal_bar("model.onnx", console) as update:
        if terminal:
            update(512, 1024)
        else:
            assert update is None
    assert ("downloading model.onnx" in output.getvalue()) is terminal
