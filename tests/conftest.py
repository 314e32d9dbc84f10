"""Shared fixtures: a home of their own for the tests, the real default voice loaded once, and the
real server on a loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from hypothesis import settings as hypothesis_settings
from hypothesis.configuration import set_hypothesis_home_dir

from voxserve.config import Settings
from voxserve.server.serving import server as voxserve_server
from voxserve.synthesis.synthesizer import Synthesizer


def pytest_configure(config: pytest.Config) -> None:
    # Hypothesis keeps its caches in the working directory (the checkout), from collection on:
    # they go with pytest's own cache instead.
    if getattr(config, "cache", None) is not None:  # absent with -p no:cacheprovider
        set_hypothesis_home_dir(config.cache.mkdir("hypothesis"))
    # The same cases on every run, so the suite passes or fails for the code, not for the draw;
    # HYPOTHESIS_PROFILE=explore draws new ones (and keeps failures in the cache) to hunt bugs.
    hypothesis_settings.register_profile("repeatable", derandomize=True, database=None)
    hypothesis_settings.register_profile("explore", derandomize=False)
    hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point HOME, the XDG directories and VOXSERVE_DATA_DIR into a temporary home for the whole
    session, and drop VOXSERVE_* settings inherited from the shell: no test reads the user's
    configuration or writes into their ``~/.local/share/voxserve``, whatever it builds its
    settings from (``Settings()``, ``load_settings()``, a server in a child process)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("VOXSERVE_")]:
            patch.delenv(name)
        patch.setenv("HOME", str(home))
        patch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
        patch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
        patch.setenv("VOXSERVE_DATA_DIR", str(home / ".local" / "share" / "voxserve"))
        yield home


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("voxserve-data")


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir)


@pytest.fixture(scope="session")
def piper_synthesizer(settings: Settings) -> Synthesizer:
    """The real embedded voice, shared by the session (loading it takes a second)."""
    return Synthesizer(settings)


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """Serve an app on a free loopback port, in a thread, as ``voxserve serve`` serves it (on the
    app's settings, if it has them); yields its URL."""
    port = free_port()
    settings = getattr(getattr(app, "state", None), "settings", None) or Settings()
    server = voxserve_server(app, settings, host="127.0.0.1", port=port, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # startup loads the default voice: slow on a busy machine
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def logged_with_traceback(caplog: pytest.LogCaptureFixture, error: type[Exception]) -> bool:
    """Whether an ``error`` was logged with its traceback (in any thread: servers run in one)."""
    return any(record.exc_info and record.exc_info[0] is error for record in caplog.records)


@pytest.fixture(scope="session")
def server_url(data_dir: Path):
    """``voxserve serve`` in its own process, as a user runs it."""
    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("VOXSERVE_")
    }
    environment.update(VOXSERVE_DATA_DIR=str(data_dir), VOXSERVE_LOG_LEVEL="warning")
    process = subprocess.Popen(
        [sys.executable, "-m", "voxserve", "serve", "--port", str(port)],
        env=environment,
    )
    url = f"http://127.0.0.1:{port}"
    with serving(process, url + "/health"):
        yield url


@contextlib.contextmanager
def serving(process: subprocess.Popen, ready_url: str, within: float = 60) -> Iterator[None]:
    """Wait until ``ready_url`` answers 200 (the server in ``process`` is up), then run the block;
    the process is stopped after it."""
    try:
        deadline = time.monotonic() + within
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args} exited with {process.returncode}")
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.args} did not start within {within:g} s")
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class FileServer:
    """What the server serves, and how; what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: int | None = None
    """Close the next answer after this many bytes of its body (once)."""
    ignore_range: bool = False
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    """(path, Range, Authorization) of each request."""


@pytest.fixture
def file_server() -> Iterator[tuple[FileServer, str]]:
    """A loopback HTTP server of ``files`` (path -> bytes), with Range, cuts and a log."""
    state = FileServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            wanted = self.headers.get("Range")
            state.requests.append((self.path, wanted, self.headers.get("Authorization")))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if wanted and not state.ignore_range:
                start = int(wanted.removeprefix("bytes=").removesuffix("-"))
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_after is not None:
                body, state.cut_after = body[: state.cut_after], None
            self.wfile.write(body)  # then the connection closes (HTTP/1.0), short or not

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
