"""Admission over HTTP: a busy engine answers 429 with Retry-After, and recovers."""

from __future__ import annotations

import threading

import httpx

from tests.conftest import running
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.server.app import create_app


def test_beyond_the_queue_requests_get_429_with_retry_after():
    engine = FakeEngine(delay=0.1)
    synthesizer = make_synthesizer(engine, max_streams_per_engine=1, max_queue=0)
    long_text = " ".join(f"Sentence number {n}." for n in range(10))
    with running(create_app(synthesizer=synthesizer)) as url:
        streaming = threading.Event()

        def occupy() -> None:
            with httpx.stream("POST", f"{url}/v1/audio/speech", json={"input": long_text}) as held:
                for _ in held.iter_bytes():
                    streaming.set()

        holder = threading.Thread(target=occupy)
        holder.start()
        assert streaming.wait(5)
        refused = httpx.post(f"{url}/v1/audio/speech", json={"input": "Me too."})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "x-should-retry" not in refused.headers  # busy: clients may retry after a while
        assert refused.json()["error"]["code"] == "overloaded"
        holder.join()
        assert httpx.post(f"{url}/v1/audio/speech", json={"input": "Now."}).status_code == 200
