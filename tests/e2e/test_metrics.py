"""GET /metrics: Prometheus text that counts what the server did."""

from __future__ import annotations

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect


def scrape(server_url: str) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{server_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_errors_latency_and_state(server_url):
    before = scrape(server_url)
    speech = f"{server_url}/v1/audio/speech"
    for _ in range(2):
        assert (
            httpx.post(
                speech, json={"input": "Counting this.", "response_format": "pcm"}
            ).status_code
            == 200
        )
    assert httpx.post(speech, json={"input": "Hi.", "voice": "nobody"}).status_code == 400
    with connect(server_url.replace("http", "ws") + "/v1/audio/speech/stream") as ws:
        ws.send("not json")
        assert json.loads(ws.recv(timeout=10))["code"] == "invalid_json"
    after = scrape(server_url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("voxserve_requests_total", route="/v1/audio/speech", code="200") == 2
    assert grew("voxserve_requests_total", route="/v1/audio/speech", code="400") == 1
    assert grew("voxserve_errors_total", route="/v1/audio/speech", code="voice_not_found") == 1
    assert grew("voxserve_errors_total", route="/v1/audio/speech/stream", code="invalid_json") == 1
    assert grew("voxserve_time_to_first_audio_seconds_count", engine="piper") >= 1
    assert grew("voxserve_realtime_factor_count", engine="piper") >= 1
    assert grew("voxserve_cache_lookups_total", engine="piper", result="hit") >= 1
    assert value(after, "voxserve_engine_loaded", engine="piper") == 1
    assert value(after, "voxserve_active_syntheses") == 0
    assert value(after, "voxserve_queue_depth", engine="piper") == 0
    assert value(after, "voxserve_generations", engine="piper") > 0
    assert value(after, "voxserve_engine_realtime_factor", engine="piper") > 1
