"""Prometheus metrics for one app: its own registry, fed by the synthesizer's observer hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.engines.base import Cost
from voxserve.synthesis.synthesizer import Synthesizer

LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0)
REALTIME_BUCKETS = (0.5, 1, 2, 5, 10, 15, 20, 30, 50, 100)


class ServerMetrics:
    """Counters and histograms as things happen; gauges read from live state at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "voxserve_requests", "Requests by route and status code", ["route", "code"],
            registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "voxserve_errors", "Errors by route and error code", ["route", "code"],
            registry=self.registry,
        )  # fmt: skip
        self.time_to_first_audio = Histogram(
            "voxserve_time_to_first_audio_seconds", "From a stream's start to its first audio",
            ["engine"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.realtime_factor = Histogram(
            "voxserve_realtime_factor", "Audio seconds made per wall second, per request",
            ["engine"], buckets=REALTIME_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.cache_lookups = Counter(
            "voxserve_cache_lookups", "Segment cache lookups by result", ["engine", "result"],
            registry=self.registry,
        )  # fmt: skip
        self.spend = Counter(
            "voxserve_spend_usd", "USD billed by paid engines, by engine and API key name",
            ["engine", "key"], registry=self.registry,
        )  # fmt: skip
        self.billed_units = Counter(
            "voxserve_billed_units", "Units (characters, tokens) billed by paid engines",
            ["engine", "unit", "key"], registry=self.registry,
        )  # fmt: skip
        self.charge: Callable[[float], str] | None = None
        """Records a spend for the request's caller and names the payer (``Spending.charge``,
        given by the app: the spending ledger reads the caller from auth, which imports this
        module); None: all anonymous."""

    def watch(self, synthesizer: Synthesizer) -> None:
        synthesizer.observer = self
        self.registry.register(_LiveState(synthesizer))

    # SynthesisObserver
    def first_audio(self, engine: str, seconds: float) -> None:
        self.time_to_first_audio.labels(engine).observe(seconds)

    def finished(self, engine: str, audio_seconds: float, wall_seconds: float) -> None:
        if wall_seconds > 0:
            self.realtime_factor.labels(engine).observe(audio_seconds / wall_seconds)

    def cached(self, engine: str, hit: bool) -> None:
        self.cache_lookups.labels(engine, "hit" if hit else "miss").inc()

    def billed(self, engine: str, cost: Cost) -> None:
        payer = self.charge(cost.usd) if self.charge else "anonymous"
        self.spend.labels(engine, payer).inc(cost.usd)
        self.billed_units.labels(engine, cost.unit, payer).inc(cost.units)


class _LiveState(Collector):
    def __init__(self, synthesizer: Synthesizer):
        self.synthesizer = synthesizer

    def collect(self) -> Iterator[GaugeMetricFamily]:
        synthesizer = self.synthesizer
        yield GaugeMetricFamily(
            "voxserve_active_syntheses", "Syntheses in progress", value=synthesizer.stats.active
        )
        loaded = GaugeMetricFamily("voxserve_engine_loaded", "1 if loaded", labels=["engine"])
        for name in synthesizer.registry.names():
            loaded.add_metric([name], int(synthesizer.registry.is_loaded(name)))
        yield loaded
        families = {
            "queue_depth": ("Requests waiting for a stream place", lambda s: s.queued_streams),
            "active_streams": ("Requests being synthesized", lambda s: s.active_streams),
            "generations": ("Engine calls made", lambda s: s.stats.generations),
            "generation_seconds_average": (
                "Average engine call",
                lambda s: s.stats.average_seconds,
            ),
            "engine_realtime_factor": (
                "Audio seconds per synthesis second",
                lambda s: s.stats.realtime_factor,
            ),
        }
        for suffix, (help_text, read) in families.items():
            family = GaugeMetricFamily(f"voxserve_{suffix}", help_text, labels=["engine"])
            for name, scheduler in synthesizer.schedulers().items():
                family.add_metric([name], read(scheduler))
            yield family


class RequestCounter:
    """Counts HTTP responses by route template (not raw path: unknown paths stay one label)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = route_of(scope)
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


def route_of(scope: Scope) -> str:
    return getattr(scope.get("route"), "path", "unmatched")
