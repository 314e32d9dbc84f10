"""What a plan costs on the engines that speak it, known before anything is spent.

Each segment is one engine call, billed ``Engine.cost`` of its text: a request's estimate is the
sum over its planned segments, chunking included, which is what the synthesizer bills as the
segments are actually sent (``Synthesizer._synthesize``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from voxserve.engines.base import Cost, Voicing
from voxserve.synthesis.plan import Segment


def segment_cost(segment: Segment) -> Cost | None:
    """What the engine call speaking ``segment`` is billed; None on a free engine."""
    return segment.engine.cost(segment.text, segment.voicing.options)


@dataclass(frozen=True)
class EngineEstimate:
    """One engine's share of a plan."""

    engine: str
    characters: int
    """Characters sent to the engine (normalized text, as planned)."""
    segments: int
    cost: Cost | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "characters": self.characters,
            "segments": self.segments,
            "cost": cost_dict(self.cost),
        }


def cost_dict(cost: Cost | None) -> dict[str, Any] | None:
    if cost is None:
        return None
    return {"units": cost.units, "unit": cost.unit, "usd": round(cost.usd, 6)}


def estimate(segments: Iterable[Segment]) -> list[EngineEstimate]:
    """Each engine's share of ``segments``, in the order the engines first speak."""
    shares: dict[str, tuple[int, int, Cost | None]] = {}
    for segment in segments:
        characters, count, cost = shares.get(segment.engine.name, (0, 0, None))
        billed = segment_cost(segment)
        if billed is not None:
            cost = billed if cost is None else cost + billed
        shares[segment.engine.name] = (characters + len(segment.text), count + 1, cost)
    return [EngineEstimate(name, *share) for name, share in shares.items()]


def total_usd(estimates: Iterable[EngineEstimate]) -> float:
    return sum(share.cost.usd for share in estimates if share.cost is not None)


def text_usd(voicing: Voicing, text: str) -> float:
    """What ``text`` would cost spoken in one call on ``voicing``'s engine (pushed text, before
    it is planned): its USD, 0 on a free engine."""
    cost = voicing.engine.cost(text, voicing.options)
    return cost.usd if cost is not None else 0.0
