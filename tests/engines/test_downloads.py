"""No request makes the server download weights: only an engine the operator set up (the default
one, or one with an ``[engines.NAME]`` table), with ``allow_downloads`` on, fetches from the Hub.
A request for ``{"model": "higgs"}`` on a server without Higgs weights tried to fetch 3B of them."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.conftest import running
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.config import Settings
from voxserve.engines.registry import EngineRegistry
from voxserve.errors import InvalidRequestError
from voxserve.server.app import create_app

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list:
    """An empty Hugging Face cache, and every way to the Hub (its download functions, and
    resolving any name off loopback) failing the test; what was tried is listed."""
    hub = pytest.importorskip("huggingface_hub")
    transformers_hub = pytest.importorskip("transformers.utils.hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    attempts: list = []

    def download(*args, **kwargs):
        attempts.append(("download", args))
        raise AssertionError("the Hugging Face Hub was called")

    for module in (hub, hub.file_download, transformers_hub):
        for function in ("hf_hub_download", "snapshot_download"):
            if hasattr(module, function):
                monkeypatch.setattr(module, function, download)
    resolve = socket.getaddrinfo

    def resolving(host, *args, **kwargs):
        if host not in LOOPBACK:
            attempts.append(("resolve", host))
            raise AssertionError(f"{host} was resolved")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolving)
    return attempts


def test_a_request_for_an_engine_without_weights_is_a_400_and_fetches_nothing(
    network_attempts: list, tmp_path: Path
):
    synthesizer = make_synthesizer(FakeEngine(), data_dir=tmp_path)
    with running(create_app(synthesizer=synthesizer)) as url:
        request = {"model": "higgs", "voice": "higgs", "input": "Hello there."}
        response = httpx.post(f"{url}/v1/audio/speech", json=request, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("engine_not_configured", "model")
    assert "[engines.higgs] audio_tokenizer_path" in error["message"]  # the setting to change
    assert "allow_downloads" in error["message"]
    assert network_attempts == []


def test_downloads_are_only_for_an_engine_the_operator_set_up(
    network_attempts: list, tmp_path: Path
):
    def higgs(**settings):
        return EngineRegistry(Settings(data_dir=tmp_path, **settings)).get("higgs")

    table = {"higgs": {"device": "cpu"}}
    assert not higgs(engines=table).settings.allow_downloads  # off by default
    assert higgs(allow_downloads=True, engines=table).settings.allow_downloads
    assert higgs(allow_downloads=True, default_engine="higgs").settings.allow_downloads
    own = {"higgs": {"allow_downloads": "true"}}  # the engine's own switch (the RunPod image's)
    assert higgs(engines=own).settings.allow_downloads
    not_set_up = higgs(allow_downloads=True)  # a request naming it is not enough
    assert not not_set_up.settings.allow_downloads
    with pytest.raises(InvalidRequestError, match="allow_downloads") as refused:
        not_set_up.load()
    assert refused.value.code == "engine_not_configured"
    assert network_attempts == []
