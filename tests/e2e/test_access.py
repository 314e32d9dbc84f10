"""Access control on a real server: keys and scopes, the loopback rule, keys on WebSockets, CORS
and WebSocket origins, per-key rate limits, and secrets kept out of everything a client sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import free_port, running, serving
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.config import ConfigError, Settings
from voxserve.server.app import create_app

SPEECH_KEY = "speech-key-0123456789"
ADMIN_KEY = "admin-key-9876543210"
KEYS = [SPEECH_KEY, {"key": ADMIN_KEY, "scope": "admin"}]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def speak(url: str, text: str = "Hello there.", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/audio/speech",
        json={"input": text, "response_format": "pcm"},
        headers=headers,
        timeout=30,
    )


def ws_url(http_url: str, path: str = "/v1/audio/speech/stream") -> str:
    return http_url.replace("http://", "ws://") + path


def stream_one_utterance(ws, text: str = "Hello there.") -> list[dict]:
    """Speak ``text`` over the text-in stream; the JSON messages up to its end."""
    ws.send(json.dumps({"type": "start", "voice": "tone"}))
    ws.send(json.dumps({"type": "text", "text": text}))
    ws.send(json.dumps({"type": "end"}))
    messages = []
    while True:
        message = ws.recv(timeout=10)
        if isinstance(message, str):
            messages.append(json.loads(message))
            if messages[-1]["type"] in ("audio_stream_stop", "error"):
                return messages


def serve(tmp_path: Path, **auth):
    synthesizer = make_synthesizer(FakeEngine(), data_dir=tmp_path, auth=auth)
    return running(create_app(synthesizer=synthesizer))


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory: pytest.TempPathFactory):
    with serve(tmp_path_factory.mktemp("keyed"), api_keys=KEYS) as url:
        yield url


# --- keys and scopes ----------------------------------------------------------------------


def test_without_a_key_the_api_answers_401_in_openais_shape(keyed_url):
    response = speak(keyed_url)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in error["message"]

    wrong = speak(keyed_url, **bearer("not-a-real-key-at-all"))
    assert wrong.status_code == 401
    assert "not valid" in wrong.json()["error"]["message"]
    assert "not-a-real-key" not in wrong.text


def test_a_speech_key_speaks_but_only_an_admin_key_deletes(keyed_url):
    spoken = speak(keyed_url, **bearer(SPEECH_KEY))
    assert spoken.status_code == 200
    assert len(spoken.content) > 1000

    voice = f"{keyed_url}/v1/audio/voices/nobody"
    refused = httpx.delete(voice, headers=bearer(SPEECH_KEY))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    # An admin key gets past access control to the route itself: the voice does not exist.
    assert httpx.delete(voice, headers=bearer(ADMIN_KEY)).status_code == 404
    assert speak(keyed_url, **bearer(ADMIN_KEY)).status_code == 200

    assert httpx.get(f"{keyed_url}/metrics", headers=bearer(SPEECH_KEY)).status_code == 403
    assert httpx.get(f"{keyed_url}/metrics", headers=bearer(ADMIN_KEY)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "admin_status"),
    [
        ("POST", "/v1/audio/voices/import", 400),  # past access control: no package sent
        ("GET", "/v1/audio/voices/nobody/export", 404),
        ("POST", "/v1/audio/voices/backup", 201),
        ("GET", "/v1/audio/voices/backups", 200),
        ("POST", "/v1/audio/voices/restore", 404),  # a backup that does not exist
        ("DELETE", "/v1/audio/voices/nobody", 404),
    ],
)
def test_the_voice_librarys_admin_routes_need_an_admin_key(keyed_url, method, path, admin_status):
    body = {"backup": "voices-none.zip"} if path.endswith("/restore") else None
    url = keyed_url + path
    assert httpx.request(method, url, json=body).status_code == 401
    refused = httpx.request(method, url, json=body, headers=bearer(SPEECH_KEY))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    allowed = httpx.request(method, url, json=body, headers=bearer(ADMIN_KEY))
    assert allowed.status_code == admin_status, allowed.text


def test_a_speech_key_still_reads_and_makes_voices(keyed_url):
    voices = f"{keyed_url}/v1/audio/voices"
    made = httpx.post(voices, json={"name": "reader", "voice": "tone"}, headers=bearer(SPEECH_KEY))
    assert made.status_code == 201
    assert httpx.get(f"{voices}/reader", headers=bearer(SPEECH_KEY)).json()["voice"] == "tone"
    assert "reader" in {voice["id"] for voice in httpx.get(voices).json()["voices"]}


def test_health_pages_and_listings_stay_open(keyed_url):
    assert httpx.get(f"{keyed_url}/health").json()["status"] == "ok"
    assert "<html" in httpx.get(f"{keyed_url}/").text
    assert "<html" in httpx.get(f"{keyed_url}/chat").text
    assert httpx.get(f"{keyed_url}/access.js").status_code == 200
    voices = httpx.get(f"{keyed_url}/v1/audio/voices")
    assert voices.status_code == 200
    assert "tone" in {voice["id"] for voice in voices.json()["voices"]}
    # /v1/models builds every installed engine to read its capabilities: slow the first time.
    assert httpx.get(f"{keyed_url}/v1/models", timeout=60).status_code == 200
    # Open for listing only: a voice's sample is synthesized, so it needs a key.
    assert httpx.get(f"{keyed_url}/v1/audio/voices/tone/sample").status_code == 401


def test_listings_can_be_closed_too(tmp_path: Path):
    with serve(tmp_path, api_keys=[SPEECH_KEY], open_listing=False) as url:
        assert httpx.get(f"{url}/v1/audio/voices").status_code == 401
        assert httpx.get(f"{url}/v1/models", timeout=60).status_code == 401
        listed = httpx.get(f"{url}/v1/models", headers=bearer(SPEECH_KEY), timeout=60)
        assert listed.status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200


def test_the_pages_learn_whether_a_key_is_needed_and_good(keyed_url, tmp_path: Path):
    assert httpx.get(f"{keyed_url}/v1/auth").json() == {
        "required": True, "authorized": False, "scope": None,
    }  # fmt: skip
    assert httpx.get(f"{keyed_url}/v1/auth", headers=bearer(ADMIN_KEY)).json() == {
        "required": True, "authorized": True, "scope": "admin",
    }  # fmt: skip
    with serve(tmp_path) as open_url:
        assert httpx.get(f"{open_url}/v1/auth").json()["required"] is False


def test_keys_come_from_a_file_with_their_scopes(tmp_path: Path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# ours\n{SPEECH_KEY}\n\n{ADMIN_KEY} admin  # the operator\n")
    with serve(tmp_path, api_keys_file=str(keys_file)) as url:
        assert speak(url, **bearer(SPEECH_KEY)).status_code == 200
        voice = f"{url}/v1/audio/voices/nobody"
        assert httpx.delete(voice, headers=bearer(SPEECH_KEY)).status_code == 403
        assert httpx.delete(voice, headers=bearer(ADMIN_KEY)).status_code == 404


def test_a_bad_keys_file_names_its_line(tmp_path: Path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{SPEECH_KEY}\n{ADMIN_KEY} root\n")
    settings = Settings(data_dir=tmp_path, auth={"api_keys_file": str(keys_file)})
    with pytest.raises(ConfigError, match="line 2"):
        create_app(settings)
    with pytest.raises(ValueError, match="8 or more characters"):
        Settings(auth={"api_keys": ["short"]})


def test_keys_from_the_environment_are_a_list(tmp_path: Path):
    from voxserve.config import load_settings

    environ = {"VOXSERVE_AUTH__API_KEYS": f"{SPEECH_KEY},{ADMIN_KEY}"}
    keys = load_settings(environ=environ).auth.api_keys
    assert [key.key.get_secret_value() for key in keys] == [SPEECH_KEY, ADMIN_KEY]
    assert SPEECH_KEY not in repr(keys)  # a secret in a traceback or a log line shows as ****


def test_with_auth_off_junk_authorization_headers_are_ignored(tmp_path: Path):
    with serve(tmp_path) as url:
        # "Bearer " arrives as "Bearer": HTTP drops a header value's trailing space.
        for junk in ("Bearer", "Bearer undefined", "undefined", "Bearer null", "Basic abc"):
            assert speak(url, Authorization=junk).status_code == 200, junk


# --- the loopback rule ----------------------------------------------------------------------


def test_a_server_off_loopback_without_keys_refuses_to_start(tmp_path: Path):
    exposed = Settings(data_dir=tmp_path, host="0.0.0.0")
    with pytest.raises(ConfigError, match="auth.api_keys"):
        create_app(exposed)
    create_app(exposed.model_copy(update={"auth": exposed.auth.model_copy(update={
        "insecure": True})}))  # fmt: skip
    create_app(Settings(data_dir=tmp_path, host="0.0.0.0", auth={"api_keys": [SPEECH_KEY]}))
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        create_app(Settings(data_dir=tmp_path, host=loopback))


def test_voxserve_serve_on_every_address_without_keys_says_which_setting(tmp_path: Path):
    environment = _clean_environment(tmp_path)
    command = [sys.executable, "-m", "voxserve", "serve", "--host", "0.0.0.0", "--port", "9"]
    refused = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "auth.api_keys" in refused.stderr and "--insecure" in refused.stderr


# --- WebSockets ---------------------------------------------------------------------------


def test_a_websocket_takes_its_key_as_a_header_query_or_subprotocol(keyed_url):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(keyed_url))
    assert refused.value.response.status_code == 401
    assert b"invalid_api_key" in refused.value.response.body

    with connect(ws_url(keyed_url), additional_headers=bearer(SPEECH_KEY)) as ws:
        assert stream_one_utterance(ws)[-1]["type"] == "audio_stream_stop"
    with connect(ws_url(keyed_url) + f"?api_key={SPEECH_KEY}") as ws:
        assert stream_one_utterance(ws)[-1]["type"] == "audio_stream_stop"
    offered = ["voxserve", f"voxserve.key.{SPEECH_KEY}"]
    with connect(ws_url(keyed_url), subprotocols=offered) as ws:
        assert ws.subprotocol == "voxserve"  # the key is not echoed back
        assert stream_one_utterance(ws)[-1]["type"] == "audio_stream_stop"
    with pytest.raises(InvalidStatus):
        connect(ws_url(keyed_url, "/ws/tts") + "?api_key=wrong-key-0000000")


# --- CORS and origins -----------------------------------------------------------------------


def test_by_default_only_the_servers_own_pages_may_call_it(tmp_path: Path):
    with serve(tmp_path) as url:
        preflight = httpx.options(
            f"{url}/v1/audio/speech",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(url), origin="https://evil.example")
        assert refused.value.response.status_code == 403
        with connect(ws_url(url), origin=url) as ws:  # the server's own page
            assert stream_one_utterance(ws)[-1]["type"] == "audio_stream_stop"


def test_configured_origins_may_call_it(tmp_path: Path):
    app_origin = "https://app.example"
    with serve(tmp_path, cors_origins=[app_origin]) as url:
        preflight = httpx.options(
            f"{url}/v1/audio/speech",
            headers={"Origin": app_origin, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"},
        )  # fmt: skip
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == app_origin
        spoken = httpx.post(
            f"{url}/v1/audio/speech", json={"input": "Hi there."}, headers={"Origin": app_origin}
        )
        assert spoken.headers["access-control-allow-origin"] == app_origin
        with connect(ws_url(url), origin=app_origin) as ws:
            assert stream_one_utterance(ws)[-1]["type"] == "audio_stream_stop"
        with pytest.raises(InvalidStatus):
            connect(ws_url(url), origin="https://other.example")


# --- rate limits ----------------------------------------------------------------------------


def test_requests_per_minute_are_limited_per_key(tmp_path: Path):
    other = "another-key-5555555555"
    keys = [{"key": SPEECH_KEY, "requests_per_minute": 2}, other]
    with serve(tmp_path, api_keys=keys, requests_per_minute=100) as url:
        assert [speak(url, **bearer(SPEECH_KEY)).status_code for _ in range(2)] == [200, 200]
        limited = speak(url, **bearer(SPEECH_KEY))
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "requests_rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 30
        assert "x-should-retry" not in limited.headers
        assert speak(url, **bearer(other)).status_code == 200  # another key has its own budget
        assert httpx.get(f"{url}/health").status_code == 200  # open paths are not counted
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(url), additional_headers=bearer(SPEECH_KEY))
        assert refused.value.response.status_code == 429


def test_characters_per_minute_are_limited_on_every_transport(tmp_path: Path):
    text = "Twenty characters!!."
    with serve(tmp_path, api_keys=[SPEECH_KEY], characters_per_minute=50) as url:
        assert speak(url, text, **bearer(SPEECH_KEY)).status_code == 200
        with connect(ws_url(url), additional_headers=bearer(SPEECH_KEY)) as ws:
            assert stream_one_utterance(ws, text)[-1]["type"] == "audio_stream_stop"
            refused = stream_one_utterance(ws, text)
            assert refused[-1]["code"] == "characters_rate_limited"
            ws.send(json.dumps({"type": "cancel"}))
        limited = speak(url, text, **bearer(SPEECH_KEY))
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "characters_rate_limited"
        with connect(ws_url(url, "/ws/tts"), additional_headers=bearer(SPEECH_KEY)) as ws:
            ws.send(json.dumps({"text": text}))
            assert json.loads(ws.recv(timeout=10))["code"] == "characters_rate_limited"


def test_without_keys_limits_apply_per_address(tmp_path: Path):
    with serve(tmp_path, requests_per_minute=1) as url:
        assert speak(url).status_code == 200
        assert speak(url).status_code == 429


# --- secrets ----------------------------------------------------------------------------------


def _clean_environment(data_dir: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VOXSERVE_")}
    environment.update(VOXSERVE_DATA_DIR=str(data_dir), VOXSERVE_CONFIG=str(data_dir / "none"))
    (data_dir / "none").write_text("")
    return environment


def test_no_secret_reaches_logs_errors_metrics_health_or_models(tmp_path: Path):
    """Every key and engine secret is known to the server, which is driven through success,
    refusal and failure at debug level; none of them may show anywhere a person can read."""
    llm_secret = "sk-llm-secret-1111111111"
    engine_secret = "rp-engine-secret-2222222"
    llm_password, engine_password = "llm-url-password-3333", "rp-url-password-4444"
    port = free_port()
    environment = _clean_environment(tmp_path)
    environment.update(
        VOXSERVE_AUTH__API_KEYS=json.dumps(KEYS),
        VOXSERVE_CHAT__LLM_API_KEY=llm_secret,
        # Nothing listens: the errors name these URLs, with passwords in them.
        VOXSERVE_CHAT__LLM_BASE_URL=f"http://ava:{llm_password}@127.0.0.1:{free_port()}/v1",
        VOXSERVE_ENGINES__RUNPOD__API_KEY=engine_secret,
        VOXSERVE_ENGINES__RUNPOD__ENDPOINT_ID="endpoint",
        VOXSERVE_ENGINES__RUNPOD__BASE_URL=f"http://rp:{engine_password}@127.0.0.1:{free_port()}",
    )
    log = tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "voxserve", "serve", "--port", str(port),
               "--log-level", "debug"]  # fmt: skip
    seen = []
    with log.open("w") as output:
        process = subprocess.Popen(command, env=environment, stdout=output, stderr=output)
        with serving(process, url + "/health"):
            admin, speech = bearer(ADMIN_KEY), bearer(SPEECH_KEY)
            seen.append(speak(url, **speech))
            seen.append(speak(url, **bearer(SPEECH_KEY[:-1] + "x")))
            seen.append(httpx.post(f"{url}/v1/audio/speech", headers=speech,
                                   json={"input": "Hi.", "model": "runpod", "voice": "default"},
                                   timeout=30))
            seen.append(httpx.post(f"{url}/v1/audio/speech", headers=speech,
                                   json={"input": "Hi.", "voice": "nobody"}))
            for path in ("/health", "/v1/models", "/v1/audio/models", "/v1/audio/voices",
                         "/metrics", "/v1/auth"):  # fmt: skip
                seen.append(httpx.get(url + path, headers=admin, timeout=60))
            with connect(ws_url(url, "/v1/chat/ws") + f"?api_key={SPEECH_KEY}") as ws:
                ws.send(json.dumps({"type": "text", "text": "Hello?"}))
                for _ in range(20):  # the LLM is unreachable: its error is a message
                    message = ws.recv(timeout=30)
                    if isinstance(message, str) and json.loads(message)["type"] == "error":
                        seen.append(message)
                        break
    shown = log.read_text() + "".join(
        item if isinstance(item, str) else f"{item.headers}{item.text}" for item in seen
    )
    assert "GET /v1/audio/voices" in shown or "/v1/chat/ws" in shown  # the access log was on
    assert "the LLM at http://127.0.0.1:" in shown and "cannot reach RunPod at" in shown
    for secret in (SPEECH_KEY, ADMIN_KEY, llm_secret, engine_secret, llm_password, engine_password):
        assert secret not in shown


def test_a_bucket_refills_at_its_per_minute_rate_on_virtual_time():
    from voxserve.errors import RateLimitedError
    from voxserve.server.auth import Principal, RateLimiter

    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    caller = Principal("key:test", "speech", None, 60)
    limiter.take(caller, "characters", 60, 60)  # a whole minute's budget at once
    with pytest.raises(RateLimitedError) as refused:
        limiter.take(caller, "characters", 60, 10)
    assert refused.value.retry_after == 10  # one character a second comes back
    now[0] = 10.0
    limiter.take(caller, "characters", 60, 10)
    # More than a minute's budget waits for a full bucket, then goes through whole.
    with pytest.raises(RateLimitedError) as refused:
        limiter.take(caller, "characters", 60, 500)
    assert refused.value.retry_after == 60
    now[0] = 70.0
    limiter.take(caller, "characters", 60, 500)
    limiter.take(Principal("key:other", "speech", None, 60), "characters", 60, 60)
