"""``POST /v1/audio/speech/estimate`` and ``/v1/audio/dialogue/estimate``: what a request would
cost, before anything is spent.

Each takes its synthesis route's body, checked the same way, and resolves and plans it with the
same code (`Synthesizer.prepare`, `prepare_dialogue`): the segments estimated are the segments
that route would send. Nothing is synthesized, and no characters are charged to the caller's
rate limit.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from voxserve.request import DialogueRequest
from voxserve.server.dialogue import read_dialogue, script_as_dialogue
from voxserve.server.openai import read_speech, speaks_dialogue
from voxserve.synthesis.cost import EngineEstimate, cost_dict, estimate, total_usd
from voxserve.synthesis.dialogue import prepare_dialogue
from voxserve.synthesis.synthesizer import Synthesizer

router = APIRouter()
CURRENCY = "USD"


@router.post("/v1/audio/speech/estimate")
async def estimate_speech(request: Request) -> JSONResponse:
    synthesizer: Synthesizer = request.app.state.synthesizer
    speech, reference = await read_speech(request, synthesizer)
    if speaks_dialogue(speech, synthesizer.settings):
        dialogue = script_as_dialogue(speech, synthesizer.settings)
        return await _dialogue_estimate(synthesizer, dialogue)
    prepared = await asyncio.to_thread(synthesizer.prepare, speech, reference)
    shares = estimate(prepared.segments)
    return JSONResponse({
        "engine": prepared.engine.name,
        "voice": prepared.voice.id,
        "characters": sum(share.characters for share in shares),
        "segments": len(prepared.segments),
        "cost": cost_dict(shares[0].cost) if shares else None,
        "currency": CURRENCY,
    })  # fmt: skip


@router.post("/v1/audio/dialogue/estimate")
async def estimate_dialogue(request: Request) -> JSONResponse:
    synthesizer: Synthesizer = request.app.state.synthesizer
    return await _dialogue_estimate(synthesizer, await read_dialogue(request, synthesizer.settings))


async def _dialogue_estimate(synthesizer: Synthesizer, dialogue: DialogueRequest) -> JSONResponse:
    prepared = await asyncio.to_thread(prepare_dialogue, synthesizer, dialogue)
    shares = estimate(segment for plan in prepared.plans for segment in plan)
    return JSONResponse({
        "characters": sum(share.characters for share in shares),
        "segments": sum(share.segments for share in shares),
        "cost": _whole_cost(shares),
        "engines": [share.to_dict() for share in shares],
        "currency": CURRENCY,
    })  # fmt: skip


def _whole_cost(shares: list[EngineEstimate]) -> dict[str, Any] | None:
    """The dialogue's cost: summed whole when its paid engines bill in one unit, else its USD
    (each engine's units are in ``engines``); None when every engine is free."""
    costs = [share.cost for share in shares if share.cost is not None]
    if not costs:
        return None
    if len({cost.unit for cost in costs}) == 1:
        return cost_dict(sum(costs[1:], costs[0]))
    return {"units": None, "unit": None, "usd": round(total_usd(shares), 6)}
