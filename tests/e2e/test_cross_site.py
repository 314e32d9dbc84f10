"""What a web page elsewhere cannot do with a server it can reach: CORS preflights answered (not
405), no state changed from a foreign origin or by a simple-request body, no WebSocket from a
foreign origin on any route, and no DNS rebinding (a page's own name pointed at the server)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import running
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.server.app import create_app

EVIL = "https://evil.example"
APP = "https://app.example"
KEY = "cross-site-key-0123456789"
WS_ROUTES = ("/v1/audio/speech/stream", "/ws/tts", "/v1/chat/ws")


def serve(tmp_path: Path, **auth):
    synthesizer = make_synthesizer(FakeEngine(), data_dir=tmp_path, auth=auth)
    return running(create_app(synthesizer=synthesizer))


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory):
    """No keys, no configured origins: the default loopback server."""
    with serve(tmp_path_factory.mktemp("cross-site")) as url:
        yield url


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory):
    """A server whose API a page of APP may use."""
    with serve(tmp_path_factory.mktemp("cross-site-app"), cors_origins=[APP]) as url:
        yield url


def preflight(url: str, origin: str, path: str = "/v1/audio/speech") -> httpx.Response:
    return httpx.options(
        url + path,
        headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip


def allow_headers(response: httpx.Response) -> set[str]:
    return {name for name in response.headers if name.startswith("access-control-allow")}


def handshake_status(url: str, path: str, host: str, origin: str | None = None) -> int:
    """The status a WebSocket handshake with this Host (and Origin) gets, from a raw socket:
    clients set Host from the URL, and a rebound page's is its own name."""
    address, port = url.removeprefix("http://").split(":")
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    with socket.create_connection((address, int(port)), timeout=10) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(connection.recv(4096).split(b" ", 2)[1])


# --- preflights -----------------------------------------------------------------------------


def test_a_preflight_is_answered_with_allow_headers_only_for_an_allowed_origin(url, app_url):
    own = preflight(url, url)  # was 405 without cors_origins
    assert own.status_code == 200
    assert own.headers["access-control-allow-origin"] == url
    assert own.headers["access-control-allow-headers"] == "authorization,content-type"
    assert "POST" in own.headers["access-control-allow-methods"]
    foreign = preflight(url, EVIL)
    assert foreign.status_code == 403 and allow_headers(foreign) == set()
    assert foreign.json()["error"]["code"] == "origin_not_allowed"
    configured = preflight(app_url, APP, "/v1/audio/voices")
    assert configured.status_code == 200
    assert configured.headers["access-control-allow-origin"] == APP
    assert allow_headers(preflight(app_url, EVIL)) == set()


# --- state-changing requests ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded"],
)
def test_a_simple_request_body_cannot_create_a_profile(url, content_type):
    """A page's form (or fetch with no headers) sends these without a preflight."""
    body = json.dumps({"name": "planted", "voice": "tone"})
    refused = httpx.post(f"{url}/v1/audio/voices", content=body,
                         headers={"Content-Type": content_type})  # fmt: skip
    assert refused.status_code == 415
    error = refused.json()["error"]
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    assert httpx.get(f"{url}/v1/audio/voices/planted").status_code == 404


def test_multipart_is_taken_only_where_a_route_takes_an_upload(url):
    form = {"input": (None, "Hello there."), "voice": (None, "tone")}
    assert httpx.post(f"{url}/v1/audio/speech", files=form, timeout=30).status_code == 200
    for path in ("/v1/audio/dialogue/estimate", "/v1/audio/voices/restore"):
        refused = httpx.post(url + path, files={"name": (None, "x")})
        assert refused.status_code == 415, path
    # A dialogue's form (with a music bed) is read, and its unknown field named.
    taken = httpx.post(f"{url}/v1/audio/dialogue", files={"name": (None, "x")})
    assert taken.status_code == 400 and taken.json()["error"]["param"] == "name"


def test_a_foreign_origin_changes_nothing_but_others_go_on(url, app_url):
    body = {"name": "from-evil", "voice": "tone"}
    refused = httpx.post(f"{url}/v1/audio/voices", json=body, headers={"Origin": EVIL})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in refused.headers
    deleted = httpx.delete(f"{url}/v1/chat/conversations/x", headers={"Origin": EVIL})
    assert deleted.status_code == 403
    # A read goes through (the browser keeps its answer from the page: no allow header).
    read = httpx.get(f"{url}/v1/models", headers={"Origin": EVIL})
    assert read.status_code == 200 and allow_headers(read) == set()
    speech = {"input": "Hi there.", "response_format": "pcm"}
    assert httpx.post(f"{url}/v1/audio/speech", json=speech).status_code == 200  # no Origin
    own = httpx.post(f"{url}/v1/audio/speech", json=speech, headers={"Origin": url})
    assert own.status_code == 200
    allowed = httpx.post(f"{app_url}/v1/audio/speech", json=speech, headers={"Origin": APP})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP
    assert "X-Sample-Rate" in allowed.headers["access-control-expose-headers"]


# --- WebSockets -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", WS_ROUTES)
def test_no_websocket_route_opens_for_a_foreign_origin(url, path):
    ws_url = url.replace("http://", "ws://") + path
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, origin=EVIL)
    assert refused.value.response.status_code == 403
    with connect(ws_url, origin=url):  # the server's own page
        pass


# --- DNS rebinding --------------------------------------------------------------------------


def test_a_rebound_name_is_refused_on_http_and_websockets(url):
    port = url.rsplit(":", 1)[1]
    rebound = f"rebind.evil.example:{port}"
    # The page's origin is its own name, the same as the Host it sends: only the Host tells.
    headers = {"Host": rebound, "Origin": f"http://{rebound}"}
    refused = httpx.get(f"{url}/v1/models", headers=headers)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "host_not_allowed"
    assert "auth.allowed_hosts" in refused.json()["error"]["message"]
    assert handshake_status(url, "/v1/audio/speech/stream", rebound, f"http://{rebound}") == 400
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "voxserve.localhost"):
        assert httpx.get(f"{url}/health", headers={"Host": host}).status_code == 200, host
    assert handshake_status(url, "/v1/audio/speech/stream", f"localhost:{port}") == 101


def test_with_keys_any_name_is_served_unless_names_are_listed(tmp_path: Path):
    auth = {"Authorization": f"Bearer {KEY}"}
    with serve(tmp_path / "keys", api_keys=[KEY]) as url:
        assert httpx.get(f"{url}/v1/models", headers={"Host": "tts.example"}).status_code == 200
    with serve(tmp_path / "listed", api_keys=[KEY], allowed_hosts=["tts.example"]) as url:
        listed = httpx.get(f"{url}/v1/models", headers={"Host": "tts.example:443", **auth})
        assert listed.status_code == 200
        other = httpx.get(f"{url}/v1/models", headers={"Host": "other.example", **auth})
        assert other.status_code == 400
