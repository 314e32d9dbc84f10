"""Cost before and after: the estimate routes, `say --estimate`, spend metrics, monthly budgets.

A paid fake engine bills from a price table, like the cloud engines; the real server runs on
loopback and real clients (httpx, websockets, click's runner) drive it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

import voxserve
from tests.conftest import running
from tests.fakes import FakeEngine, collect, fake_chat_llm, make_synthesizer
from voxserve.cli import main
from voxserve.config import ChatSettings
from voxserve.engines.base import Cost, SynthesisOptions
from voxserve.errors import EngineError
from voxserve.request import SpeechRequest
from voxserve.server.app import create_app
from voxserve.server.metrics import ServerMetrics
from voxserve.server.spending import DATABASE_FILE
from voxserve.synthesis.synthesizer import Synthesizer

USD_PER_MILLION_CHARACTERS = 30.0
ALICE = "alice-key-0123456789"
OPS = "ops-admin-key-9876543210"
LONG_TEXT = (
    "The first sentence is here. A second one follows it closely. "
    "And a third sentence, rather longer than the others, comes at the end."
)


class PaidEngine(FakeEngine):
    """The fake, billed per character as a cloud engine is."""

    name = "paid"

    def cost(self, text: str, options: SynthesisOptions) -> Cost | None:
        return Cost(len(text), "characters", len(text) * USD_PER_MILLION_CHARACTERS / 1e6)


def billed(engine: PaidEngine) -> Cost:
    """What the engine's calls so far were billed, from its own record of them."""
    costs = [engine.cost(text, SynthesisOptions(voice="tone")) for text in engine.calls]
    return sum(costs[1:], costs[0])


def paid_synthesizer(data_dir: Path, **settings) -> tuple[Synthesizer, PaidEngine]:
    # Short chunks: a multi-sentence text is several segments, each its own engine call.
    engine = PaidEngine(max_input_chars=40)
    synthesizer = make_synthesizer(engine, data_dir=data_dir, default_engine="paid", **settings)
    synthesizer.registry.register(FakeEngine())  # a free engine beside it
    return synthesizer, engine


def keys(budget: float | None = None) -> dict:
    return {"api_keys": [
        {"key": ALICE, "name": "alice", "monthly_budget_usd": budget},
        {"key": OPS, "scope": "admin"},
    ]}  # fmt: skip


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def speak(url: str, text: str, key: str = ALICE, path: str = "/v1/audio/speech", **fields):
    body = {"input": text, "response_format": "pcm", **fields}
    return httpx.post(f"{url}{path}", json=body, headers=bearer(key), timeout=30)


def spend_samples(url: str) -> tuple[str, dict[tuple[str, tuple], float]]:
    text = httpx.get(f"{url}/metrics", headers=bearer(OPS)).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


@pytest.fixture(scope="module")
def paid(tmp_path_factory: pytest.TempPathFactory):
    """A server with the paid engine (default) and the free fake, and keys without budgets."""
    synthesizer, engine = paid_synthesizer(tmp_path_factory.mktemp("paid"), auth=keys())
    with running(create_app(synthesizer=synthesizer)) as url:
        yield url, engine


# --- the estimate --------------------------------------------------------------------------


def test_the_estimate_is_what_the_engine_then_bills_chunks_included(paid):
    url, engine = paid
    engine.calls.clear()
    estimate = speak(url, LONG_TEXT, path="/v1/audio/speech/estimate", speed=1.25)
    assert estimate.status_code == 200, estimate.text
    answer = estimate.json()
    assert engine.calls == []  # nothing synthesized
    assert answer["engine"] == "paid" and answer["voice"] == "tone"
    assert answer["currency"] == "USD"
    assert answer["segments"] > 2  # the text was chunked

    assert speak(url, LONG_TEXT, speed=1.25).status_code == 200
    spent = billed(engine)
    assert answer["segments"] == len(engine.calls)
    assert answer["characters"] == spent.units == sum(map(len, engine.calls))
    assert answer["cost"]["unit"] == "characters"
    assert answer["cost"]["units"] == spent.units
    assert answer["cost"]["usd"] == pytest.approx(spent.usd)


def test_a_free_engine_costs_nothing(paid):
    url, _ = paid
    answer = speak(url, LONG_TEXT, path="/v1/audio/speech/estimate", model="fake").json()
    assert answer["engine"] == "fake"
    assert answer["cost"] is None
    assert answer["characters"] > 0 and answer["segments"] > 2


def test_the_estimate_refuses_what_speech_refuses(paid):
    url, _ = paid
    answer = speak(url, "Hello.", path="/v1/audio/speech/estimate", voice="nobody")
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "voice"
    answer = speak(url, "Hello.", path="/v1/audio/speech/estimate", speed=9.0)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "speed"


def test_a_dialogue_is_estimated_as_it_is_then_billed(paid):
    url, engine = paid
    turns = [
        {"speaker": "Ann", "text": "Good morning to you. How was the trip over here?"},
        {"speaker": "Bob", "text": "Long, but fine.", "voice": "low"},
    ]
    engine.calls.clear()
    response = httpx.post(
        f"{url}/v1/audio/dialogue/estimate", json={"turns": turns}, headers=bearer(ALICE)
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert engine.calls == []
    [share] = answer["engines"]
    assert share["engine"] == "paid" and answer["cost"] == share["cost"]
    assert answer["segments"] == share["segments"] > 2

    spoken = httpx.post(
        f"{url}/v1/audio/dialogue", json={"turns": turns, "response_format": "pcm"},
        headers=bearer(ALICE), timeout=30,
    )  # fmt: skip
    assert spoken.status_code == 200
    assert answer["segments"] == len(engine.calls)
    assert answer["cost"]["units"] == billed(engine).units
    assert answer["cost"]["usd"] == pytest.approx(billed(engine).usd)

    free = {"turns": turns, "model": "fake"}
    answer = httpx.post(f"{url}/v1/audio/dialogue/estimate", json=free, headers=bearer(ALICE))
    assert answer.json()["cost"] is None
    assert answer.json()["engines"][0]["engine"] == "fake"


def test_the_library_estimates_as_the_server_does(tmp_path: Path):
    synthesizer, engine = paid_synthesizer(tmp_path)
    share = voxserve.estimate(LONG_TEXT, synthesizer=synthesizer)
    assert engine.calls == []
    prepared = synthesizer.prepare(voxserve.SpeechRequest(input=LONG_TEXT))
    assert share.segments == len(prepared.segments)
    assert share.cost == Cost(
        share.characters, "characters", share.characters * USD_PER_MILLION_CHARACTERS / 1e6
    )


# --- say --estimate --------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VOXSERVE_DATA_DIR", str(tmp_path / "data"))

    def invoke(*arguments: str):
        return CliRunner().invoke(main, list(arguments), catch_exceptions=False)

    return invoke


def test_say_estimate_prints_the_cost_and_makes_no_audio(cli, tmp_path, monkeypatch):
    synthesizer, engine = paid_synthesizer(tmp_path / "paid")
    # The CLI builds its synthesizer from the configuration: the paid engine only tests have is
    # handed to it in its place, as a plugin would be.
    monkeypatch.setattr("voxserve.synthesis.synthesizer.Synthesizer", lambda _: synthesizer)
    result = cli("say", "--estimate", LONG_TEXT)
    assert result.exit_code == 0, result.output
    expected = voxserve.estimate(LONG_TEXT, synthesizer=synthesizer)
    assert engine.calls == []
    row = next(line for line in result.output.splitlines() if line.strip().startswith("paid"))
    assert row.split() == [
        "paid", str(expected.characters), str(expected.segments), str(expected.characters),
        "characters", f"{expected.cost.usd:.6f}",
    ]  # fmt: skip
    assert list(tmp_path.glob("*.mp3")) == []


def test_say_estimate_on_the_free_default_engine(cli, tmp_path):
    result = cli("say", "--estimate", "Hello there. How are you today?")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.strip().startswith("piper"))
    assert row.split()[-1] == "free"
    assert cli("say", "Hello.").exit_code != 0  # without --estimate an output is still needed


# --- spending, as billed ----------------------------------------------------------------------


def test_spending_is_counted_per_key_name_and_never_shows_the_key(paid):
    url, engine = paid
    _, before = spend_samples(url)
    engine.calls.clear()
    text = "Metrics count this sentence. And then this other one."
    assert speak(url, text).status_code == 200
    metrics, after = spend_samples(url)
    spent = billed(engine)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("voxserve_spend_usd_total", engine="paid", key="alice") == pytest.approx(spent.usd)
    billed_units = grew(
        "voxserve_billed_units_total", engine="paid", unit="characters", key="alice"
    )
    assert billed_units == spent.units
    for secret in (ALICE, OPS, hashlib.sha256(ALICE.encode()).hexdigest()):
        assert secret not in metrics


def test_an_unnamed_key_is_labelled_by_a_short_label(paid):
    url, _ = paid
    assert speak(url, "The admin speaks once.", key=OPS).status_code == 200
    metrics, samples = spend_samples(url)
    labels = {
        dict(labels)["key"] for (name, labels) in samples if name == "voxserve_spend_usd_total"
    }
    digest = hashlib.sha256(OPS.encode()).hexdigest()
    assert f"key-{digest[:8]}" in labels
    assert digest[:16] not in metrics and OPS not in metrics


def test_a_cached_segment_is_not_billed_again(paid):
    url, engine = paid
    text = "Say this twice."
    assert speak(url, text).status_code == 200
    _, before = spend_samples(url)
    calls = len(engine.calls)
    assert speak(url, text).status_code == 200
    _, after = spend_samples(url)
    assert len(engine.calls) == calls  # served from the cache
    name = ("voxserve_spend_usd_total", (("engine", "paid"), ("key", "alice")))
    assert after[name] == before[name]


# --- monthly budgets ------------------------------------------------------------------------


def test_a_budget_refuses_before_anything_is_spent_and_survives_a_restart(tmp_path: Path):
    text = "Budgets come first."
    price = len(text) * USD_PER_MILLION_CHARACTERS / 1e6  # one segment: the text as it is
    budget = 1.5 * price  # room for one request, not two
    synthesizer, engine = paid_synthesizer(tmp_path, auth=keys(budget))
    with running(create_app(synthesizer=synthesizer)) as url:
        assert speak(url, text).status_code == 200
        assert billed(engine).usd == pytest.approx(price)
    assert (tmp_path / DATABASE_FILE).exists()

    synthesizer, engine = paid_synthesizer(tmp_path, auth=keys(budget))  # a new server
    with running(create_app(synthesizer=synthesizer)) as url:
        refused = speak(url, text)
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "insufficient_quota"
        for amount in (budget, price):  # the budget, the estimate, and the spent amount
            assert f"${amount:.6f}" in error["message"]
        assert "resets on" in error["message"] and "00:00 UTC" in error["message"]
        assert refused.headers["x-should-retry"] == "false"
        assert "retry-after" not in refused.headers
        assert engine.calls == []  # nothing spent
        # The estimate itself is never refused: it spends nothing.
        assert speak(url, text, path="/v1/audio/speech/estimate").status_code == 200
        # Another key, without a budget, is not held by alice's.
        assert speak(url, text, key=OPS).status_code == 200


def test_a_budget_refuses_a_dialogue_and_pieces_of_streamed_text(tmp_path: Path):
    budget = 100 * USD_PER_MILLION_CHARACTERS / 1e6  # 100 characters
    synthesizer, engine = paid_synthesizer(tmp_path, auth=keys(budget))
    with running(create_app(synthesizer=synthesizer)) as url:
        turns = [{"speaker": "Ann", "text": "word " * 30}]
        refused = httpx.post(
            f"{url}/v1/audio/dialogue", json={"turns": turns}, headers=bearer(ALICE)
        )
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "insufficient_quota"
        assert refused.headers["x-should-retry"] == "false"

        stream = url.replace("http://", "ws://") + f"/v1/audio/speech/stream?api_key={ALICE}"
        with connect(stream) as ws:
            ws.send(json.dumps({"type": "start", "voice": "tone"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "audio_stream_start"
            ws.send(json.dumps({"type": "text", "text": "A short piece fits. "}))
            ws.send(json.dumps({"type": "text", "text": "Far too long a piece. " * 10}))
            error = json.loads(ws.recv(timeout=10))
            assert error["type"] == "error" and error["code"] == "insufficient_quota"
            assert error["param"] == "text"
        assert all("Far too long" not in call for call in engine.calls)


async def test_requests_at_once_each_hold_their_estimate(tmp_path: Path):
    text = "Held until it ends."
    price = len(text) * USD_PER_MILLION_CHARACTERS / 1e6
    # Room for two; the engine is slow, so all four are checked before any is billed.
    synthesizer, engine = paid_synthesizer(tmp_path, auth=keys(2.5 * price))
    engine.delay = 0.5
    with running(create_app(synthesizer=synthesizer)) as url:
        async with httpx.AsyncClient(headers=bearer(ALICE), timeout=30) as client:
            body = {"input": text, "response_format": "pcm"}
            answers = await asyncio.gather(
                *[client.post(f"{url}/v1/audio/speech", json=body) for _ in range(4)]
            )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200, 200, 429, 429]
        refused = next(answer for answer in answers if answer.status_code == 429)
        assert refused.json()["error"]["code"] == "insufficient_quota"
        assert "requests running now hold" in refused.json()["error"]["message"]
        assert billed(engine).usd == pytest.approx(2 * price)  # never past the budget


def test_a_request_that_fails_gives_back_what_it_held(tmp_path: Path):
    text = "This one goes well."
    failing = "This one goes bust."  # as long: the same estimate
    price = len(text) * USD_PER_MILLION_CHARACTERS / 1e6
    synthesizer, engine = paid_synthesizer(tmp_path, auth=keys(1.5 * price))
    engine.fail_on = "bust"
    with running(create_app(synthesizer=synthesizer)) as url:
        assert speak(url, failing).status_code >= 500  # nothing made, nothing billed
        assert speak(url, text).status_code == 200  # its hold was given back
        assert billed(engine).usd == pytest.approx(2 * price)  # two calls, one billed...
        assert speak(url, text).status_code == 429  # ...and counted


def until_error(ws) -> list[dict]:
    """The chat's messages (not its audio) up to and with the first error."""
    messages: list[dict] = []
    while not messages or messages[-1]["type"] != "error":
        message = ws.recv(timeout=30)
        if isinstance(message, str):
            messages.append(json.loads(message))
    return messages


def test_a_chat_reply_stops_at_the_budget(tmp_path: Path):
    # No digits: what the engine is sent is then the text the budget was checked on.
    reply = " ".join(["This is one more sentence of a long reply."] * 12)
    budget = 120 * USD_PER_MILLION_CHARACTERS / 1e6  # about three of its sentences
    with running(fake_chat_llm(lambda messages: reply)) as llm_url:
        chat = ChatSettings(llm_base_url=llm_url + "/v1", characters=[
            {"name": "Ava", "voice": "tone", "persona": "You are Ava."},
        ])  # fmt: skip
        synthesizer, engine = paid_synthesizer(tmp_path, auth=keys(budget), chat=chat)
        with running(create_app(synthesizer=synthesizer)) as url:
            chat_ws = url.replace("http://", "ws://") + f"/v1/chat/ws?api_key={ALICE}"
            with connect(chat_ws) as ws:
                ws.send(json.dumps({"type": "text", "text": "Tell me everything."}))
                assert until_error(ws)[-1]["code"] == "insufficient_quota"
                spoken = "".join(engine.calls)
                assert 40 < len(spoken) <= 120  # what the budget paid for, and no more
                # The next reply speaks what is left of the budget, at most.
                ws.send(json.dumps({"type": "text", "text": "Still there?"}))
                assert until_error(ws)[-1]["code"] == "insufficient_quota"
                assert len("".join(engine.calls)) <= 120


class FlakyPaidEngine(PaidEngine):
    """Fails its first call with a passing error before any audio (tried again by the base)."""

    failed = False

    def synthesize(self, text: str, options: SynthesisOptions):
        if not self.failed:
            self.failed = True
            self.calls.append(text)
            raise EngineError("upstream dropped the connection", retryable=True)
        yield from super().synthesize(text, options)


async def test_a_call_tried_again_before_audio_is_billed_once(tmp_path: Path):
    engine = FlakyPaidEngine()
    synthesizer = make_synthesizer(engine, data_dir=tmp_path, default_engine="paid")
    metrics = ServerMetrics()
    metrics.watch(synthesizer)
    text = "Billed only once."
    assert len(await collect(synthesizer, SpeechRequest(input=text))) > 0
    assert engine.calls == [text, text]
    units = metrics.registry.get_sample_value(
        "voxserve_billed_units_total",
        {"engine": "paid", "unit": "characters", "key": "anonymous"},
    )
    assert units == len(text)
