"""Remote engines' targets (issue 15), against the loopback providers of tests/providers, each
against a baseline measured in the same run.

    overhead     for openai (tts-1, raw pcm), edge, alltalk (its streaming route) and, when its
                 engine and stand-in exist, elevenlabs (its plain pcm stream): time to the first
                 audio byte and to the end of TEXT, called directly (httpx; edge-tts'
                 ``Communicate`` for Edge) and through POST /v1/audio/speech (pcm, streamed),
                 interleaved rounds, medians; first audio <= +15 ms, direct / server time >= 0.95
    rate limits  20 concurrent requests through openai while the stand-in answers its first
                 calls 429 with Retry-After: outcomes by status; no error but 429s that outlived
                 the engine's retries
    cost         POST /v1/audio/speech/estimate against what the stand-in billed for the same
                 request spoken (characters for tts-1 and elevenlabs, tokens for
                 gpt-4o-mini-tts, seconds of speech for zonos), per text: estimate / billed,
                 in the estimate's units and in USD at the engines' own prices

What the overhead comparison includes. Directly: one provider call for the whole text, its audio
taken as the provider sends it (OpenAI, AllTalk and ElevenLabs 24 kHz PCM, AllTalk's WAV header
not counted; Edge MP3, not decoded). Through the server: the text normalized and planned (one
provider call per sentence, the first clause of the first sentence on its own, up to
``lookahead`` calls ahead), each answer decoded (Edge's MP3, AllTalk's WAV), fades, pauses
between sentences (silence: no wall time), the engine's own 24 kHz sent as pcm (no resampling:
the answer's Content-Type is recorded to show it), HTTP streaming. The stand-ins pace their
audio at PACE times realtime; their speech is Piper's, made once per text and kept, so after the
warm-up neither path waits on Piper.

Run: .venv/bin/python bench/remote.py [--quick]. Prints a table, writes bench/results/remote.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.core import SENTENCES, long_text, room_for_clients, start_server  # noqa: E402
from tests.providers import alltalk_server, edge_server, openai_server, zonos_server  # noqa: E402
from voxserve.engines.alltalk import OUTPUT_FILE  # noqa: E402
from voxserve.engines.openai_speech import OPENAI_PRICES  # noqa: E402
from voxserve.engines.piper import PiperEngine  # noqa: E402
from voxserve.engines.zonos import ZYPHRA_PRICES  # noqa: E402

PACE = 4.0
"""How many times faster than realtime the stand-ins send their audio: a provider is quick, not
infinitely so."""
TEXT = " ".join(SENTENCES[:3])
"""Three sentences (~15 s of speech), the second with a clause: one call each through the server."""
BURST_TEXT = " ".join(SENTENCES[:2])
BURST_CLIENTS = 20
BURST_429S = 16
"""Calls the stand-in answers 429 before it speaks again: most of the burst's first tries."""
RETRY_AFTER = "1"
COST_TEXTS = {
    "short": "The birds sing at dawn.",
    "numbers": "The invoice came to $1,250, due by March 15th.",
}
WAV_HEADER = 44
RATE = 24000
"""What the timed engines speak, and the server sends on unresampled."""
VOICES = {
    "openai": "alloy",
    "edge": "en-US-GuyNeural",
    "alltalk": "female_01.wav",
    "elevenlabs": "21m00Tcm4TlvDq8ikWAM",  # ElevenLabs' premade Rachel
}
PORT = 18900
EDGE_PATCHED = (
    "-c",
    "import sys, edge_tts.communicate, edge_tts.voices\n"
    "edge_tts.communicate.WSS_URL, edge_tts.voices.VOICE_LIST = sys.argv.pop(1), sys.argv.pop(1)\n"
    "from voxserve.cli import main\n"
    "main()",
)
"""The CLI run with edge-tts pointed at the stand-in (its URLs are module globals, no setting):
the two URLs follow, then the CLI's arguments."""
ELEVENLABS = all(
    (ROOT / path).exists()
    for path in ("voxserve/engines/elevenlabs.py", "tests/providers/elevenlabs_server.py")
)
"""Whether the elevenlabs engine and its stand-in exist yet (another part of issue 15)."""
elevenlabs_server = (
    importlib.import_module("tests.providers.elevenlabs_server") if ELEVENLABS else None
)
elevenlabs_engine = importlib.import_module("voxserve.engines.elevenlabs") if ELEVENLABS else None


@dataclass(frozen=True)
class Timing:
    first: float
    """Seconds to the first audio byte."""
    total: float
    """Seconds to the end of the answer."""
    size: int
    """Audio bytes."""
    media_type: str = ""


@dataclass
class Providers:
    openai: openai_server.OpenAIServer
    edge: edge_server.EdgeServer
    alltalk: alltalk_server.AllTalkServer
    zonos: zonos_server.ZonosServer
    elevenlabs: Any = None
    """The ElevenLabs stand-in, where it exists (tests/providers/elevenlabs_server.py)."""

    def pace(self, paced: bool) -> None:
        """Audio at PACE times realtime (pieces of 0.1 s, Edge's frames of 0.2 s), or at once."""
        speedup = PACE if paced else float("inf")
        self.openai.pace = openai_server.CHUNK_BYTES / 2 / openai_server.RATE / speedup
        self.edge.pace = edge_server.FRAME_BYTES / (48_000 / 8) / speedup
        self.alltalk.pace = alltalk_server.PIECE_BYTES / 2 / alltalk_server.RATE / speedup
        self.zonos.pace = 0.0  # only billed here, never timed
        if elevenlabs_server is not None:
            self.elevenlabs.pace = elevenlabs_server.PIECE_BYTES / 2 / RATE / speedup

    def calls(self, engine: str) -> int:
        """Speech calls the engine's stand-in has answered."""
        if engine == "edge":
            return len(self.edge.connections)
        if engine == "elevenlabs":  # its calls hold the voice list's too
            return len(self.elevenlabs.bills)
        return len(getattr(self, engine).calls)


def start_providers() -> Providers:
    """The stand-ins, speaking with one Piper voice; edge-tts in this process pointed at its
    stand-in."""
    import edge_tts.communicate
    import edge_tts.voices

    piper = PiperEngine()
    piper.load()
    pcm_speech = openai_server.piper_speech(piper)
    providers = Providers(
        openai_server.OpenAIServer(pcm_speech).start(),
        edge_server.EdgeServer(edge_server.piper_speech(piper)).start(),
        alltalk_server.AllTalkServer(pcm_speech).start(),
        zonos_server.ZonosServer(pcm_speech).start(),
    )
    if elevenlabs_server is not None:
        providers.elevenlabs = elevenlabs_server.ElevenLabsServer(pcm_speech).start()
    edge_tts.communicate.WSS_URL = providers.edge.wss_url
    edge_tts.voices.VOICE_LIST = providers.edge.voice_list_url
    return providers


def server_settings(providers: Providers, openai_model: str) -> dict[str, str]:
    """Every remote engine pointed at its stand-in; no segment cache (the rounds repeat TEXT,
    and a lookup is not the provider path); room for the burst's clients."""
    elevenlabs = {}
    if elevenlabs_server is not None:
        elevenlabs = {
            "VOXSERVE_ENGINES__ELEVENLABS__API_KEY": elevenlabs_server.KEY,
            "VOXSERVE_ENGINES__ELEVENLABS__BASE_URL": providers.elevenlabs.url,
            "VOXSERVE_ENGINES__ELEVENLABS__TIMESTAMPS": "false",  # the stream timed directly
        }
    return {
        **elevenlabs,
        "VOXSERVE_CACHE_MB": "0",
        "VOXSERVE_ENGINES__OPENAI__API_KEY": openai_server.KEY,
        "VOXSERVE_ENGINES__OPENAI__BASE_URL": providers.openai.url,
        "VOXSERVE_ENGINES__OPENAI__MODEL": openai_model,
        "VOXSERVE_ENGINES__ALLTALK__BASE_URL": providers.alltalk.url,
        # Named here: a request's voice is checked before the engine loads (and lists AllTalk's
        # voices), so without this every alltalk request is refused (voice_not_found).
        "VOXSERVE_ENGINES__ALLTALK__VOICES": ",".join(alltalk_server.VOICES),
        "VOXSERVE_ENGINES__ZONOS__API_KEY": zonos_server.KEY,
        "VOXSERVE_ENGINES__ZONOS__BASE_URL": providers.zonos.url,
        **room_for_clients(BURST_CLIENTS),
    }


def start_voxserve(port: int, data_dir: str, providers: Providers, openai_model: str):
    launcher = (*EDGE_PATCHED, providers.edge.wss_url, providers.edge.voice_list_url)
    return start_server(port, data_dir, server_settings(providers, openai_model), launcher)


def streamed(
    client: httpx.Client, method: str, url: str, *, header: int = 0, **request: Any
) -> Timing:
    """One streamed HTTP answer timed; ``header``: bytes before its audio."""
    started = time.perf_counter()
    first, size = None, 0
    with client.stream(method, url, **request) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.read().decode()}")
        for data in response.iter_bytes():
            size += len(data)
            if first is None and size > header:
                first = time.perf_counter() - started
        media_type = response.headers.get("content-type", "")
    assert first is not None, f"no audio from {url}"
    return Timing(first, time.perf_counter() - started, size - header, media_type)


async def edge_streamed(text: str, voice: str) -> Timing:
    """edge-tts' own client speaking ``text``, timed to its first MP3 bytes and its end."""
    import edge_tts

    started = time.perf_counter()
    first, size = None, 0
    async for message in edge_tts.Communicate(text, voice, boundary="WordBoundary").stream():
        if message["type"] == "audio":
            size += len(message["data"])
            first = first or time.perf_counter() - started
    assert first is not None, "no audio from the Edge stand-in"
    return Timing(first, time.perf_counter() - started, size, "audio/mpeg")


def direct_calls(providers: Providers, client: httpx.Client) -> dict[str, Callable[[], Timing]]:
    """Each engine's provider asked for TEXT as its own client asks."""
    openai_body = {"model": "tts-1", "input": TEXT, "voice": VOICES["openai"],
                   "response_format": "pcm"}  # fmt: skip
    alltalk_query = {"text": TEXT, "voice": VOICES["alltalk"], "language": "en",
                     "output_file": OUTPUT_FILE}  # fmt: skip
    openai_url = f"{providers.openai.url}/audio/speech"
    alltalk_url = f"{providers.alltalk.url}/api/tts-generate-streaming"
    authorized = {"Authorization": f"Bearer {openai_server.KEY}"}
    calls = {
        "openai": partial(
            streamed, client, "POST", openai_url, json=openai_body, headers=authorized
        ),
        "edge": lambda: asyncio.run(edge_streamed(TEXT, VOICES["edge"])),
        "alltalk": partial(
            streamed, client, "GET", alltalk_url, params=alltalk_query, header=WAV_HEADER
        ),
    }
    if elevenlabs_server is not None and elevenlabs_engine is not None:
        url = f"{providers.elevenlabs.url}/v1/text-to-speech/{VOICES['elevenlabs']}/stream"
        calls["elevenlabs"] = partial(
            streamed, client, "POST", url, params={"output_format": f"pcm_{RATE}"},
            json={"text": TEXT, "model_id": elevenlabs_engine.DEFAULT_MODEL},
            headers={"xi-api-key": elevenlabs_server.KEY},
        )  # fmt: skip
    return calls


def speech(server: httpx.Client, engine: str, text: str, voice: str) -> Timing:
    body = {"model": engine, "voice": voice, "input": text, "response_format": "pcm"}
    return streamed(server, "POST", "/v1/audio/speech", json=body)


def audio_seconds(timing: Timing) -> float:
    """Seconds of audio in an answer: 16-bit PCM at RATE, or Edge's MP3 at 48 kbit/s."""
    return timing.size / (48_000 / 8 if timing.media_type == "audio/mpeg" else 2 * RATE)


def overhead(
    providers: Providers, server: httpx.Client, direct: httpx.Client, rounds: int
) -> dict[str, dict[str, Any]]:
    """Direct and through the server, alternating which goes first each round."""
    calls = direct_calls(providers, direct)
    results: dict[str, dict[str, Any]] = {}
    for engine, call in calls.items():
        through = partial(speech, server, engine, TEXT, VOICES[engine])
        # Warm: the stand-in makes each text's speech once, and the engine loads.
        call()
        through()
        before = providers.calls(engine)
        media_type = through().media_type
        per_request = providers.calls(engine) - before
        timings: dict[str, list[Timing]] = {"direct": [], "server": []}
        for index in range(rounds):
            pair = [("direct", call), ("server", through)]
            for name, timed in pair if index % 2 == 0 else pair[::-1]:
                timings[name].append(timed())
        median = {
            (name, part): statistics.median(getattr(timing, part) for timing in runs)
            for name, runs in timings.items()
            for part in ("first", "total")
        }
        results[engine] = {
            "direct_first_ms": round(1000 * median["direct", "first"], 1),
            "server_first_ms": round(1000 * median["server", "first"], 1),
            "first_audio_overhead_ms": round(
                1000 * (median["server", "first"] - median["direct", "first"]), 1
            ),
            "direct_total_s": round(median["direct", "total"], 3),
            "server_total_s": round(median["server", "total"], 3),
            "throughput_ratio": round(median["direct", "total"] / median["server", "total"], 3),
            "provider_calls_per_server_request": per_request,
            "server_media_type": media_type,
            "direct_audio_seconds": round(audio_seconds(timings["direct"][0]), 2),
            "server_audio_seconds": round(audio_seconds(timings["server"][0]), 2),
        }
    return results


def rate_limited_burst(providers: Providers, base_url: str) -> dict[str, Any]:
    """BURST_CLIENTS requests at once through openai while the stand-in answers 429s."""
    openai = providers.openai
    body = {"model": "openai", "voice": VOICES["openai"], "input": BURST_TEXT,
            "response_format": "pcm"}  # fmt: skip
    with httpx.Client(base_url=base_url, timeout=300) as client:
        whole = speech(client, "openai", BURST_TEXT, VOICES["openai"]).size  # no 429s yet

    def outcome(_: int) -> str:
        try:
            with httpx.stream("POST", f"{base_url}/v1/audio/speech", json=body, timeout=300) as r:
                if r.status_code != 200:
                    r.read()
                    code = r.json().get("error", {}).get("code")
                    return f"{r.status_code} {code}"
                size = sum(len(data) for data in r.iter_bytes())
                return "200 whole" if size == whole else f"200 cut short ({size}/{whole} bytes)"
        except httpx.HTTPError as error:
            return f"broken ({type(error).__name__})"

    calls_before = len(openai.calls)
    openai.failures, openai.retry_after = [429] * BURST_429S, RETRY_AFTER
    started = time.perf_counter()
    with ThreadPoolExecutor(BURST_CLIENTS) as pool:
        outcomes = Counter(pool.map(outcome, range(BURST_CLIENTS)))
    wall = time.perf_counter() - started
    answered_429 = BURST_429S - len(openai.failures)
    openai.failures.clear()
    openai.retry_after = None
    return {
        "clients": BURST_CLIENTS,
        "outcomes": dict(sorted(outcomes.items())),
        "provider_calls": len(openai.calls) - calls_before,
        "provider_429s": answered_429,
        "wall_s": round(wall, 2),
        "errors_other_than_429": sum(
            count for name, count in outcomes.items() if not name.startswith(("200 whole", "429"))
        ),
    }


def billed(providers: Providers, billed_as: str, since: int) -> tuple[float, float]:
    """The units (the estimate's) and USD the stand-in billed from its ``since``-th bill on, at
    the engines' own published prices."""
    if billed_as == "elevenlabs" and elevenlabs_engine is not None:
        prices = elevenlabs_engine.ELEVENLABS_PRICES
        bills = providers.elevenlabs.bills[since:]
        characters = sum(bill.characters for bill in bills)
        return characters, sum(bill.characters * prices[bill.model] / 1e6 for bill in bills)
    if billed_as == "zonos":
        bills = providers.zonos.bills[since:]
        seconds = sum(bill.seconds for bill in bills)
        return seconds, sum(bill.seconds / 60 * ZYPHRA_PRICES[bill.model].per_minute
                            for bill in bills)  # fmt: skip
    bills = providers.openai.bills[since:]
    price = OPENAI_PRICES[billed_as]
    if billed_as == openai_server.TOKEN_MODEL:
        text = sum(bill.input_tokens for bill in bills)
        audio = sum(bill.output_tokens for bill in bills)
        assert price.input_tokens is not None and price.audio_tokens is not None
        return text + audio, (text * price.input_tokens + audio * price.audio_tokens) / 1e6
    characters = sum(bill.characters for bill in bills)
    assert price.characters is not None
    return characters, characters * price.characters / 1e6


def cost_accuracy(
    providers: Providers, servers: dict[str, httpx.Client], texts: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Each paid engine's estimate of each text, and what speaking it was billed."""
    paid = {  # what is billed -> (server, engine, voice)
        "tts-1": ("tts-1", "openai", VOICES["openai"]),
        openai_server.TOKEN_MODEL: (openai_server.TOKEN_MODEL, "openai", VOICES["openai"]),
        "zonos": ("tts-1", "zonos", "american_female"),
    }
    if ELEVENLABS:
        paid["elevenlabs"] = ("tts-1", "elevenlabs", VOICES["elevenlabs"])
    results: dict[str, dict[str, Any]] = {}
    for billed_as, (server_name, engine, voice) in paid.items():
        server = servers[server_name]
        bills = getattr(providers, engine).bills
        for label, text in texts.items():
            body = {"model": engine, "voice": voice, "input": text, "response_format": "pcm"}
            estimate = server.post("/v1/audio/speech/estimate", json=body)
            estimate.raise_for_status()
            made = estimate.json()
            since = len(bills)
            speech(server, engine, text, voice)
            units, usd = billed(providers, billed_as, since)
            results[f"{billed_as} {label}"] = {
                "characters": len(text),
                "segments": made["segments"],
                "provider_calls": len(bills) - since,
                "unit": made["cost"]["unit"],
                "estimated": made["cost"]["units"],
                "billed": round(units, 2),
                "ratio": round(made["cost"]["units"] / units, 3),
                "estimated_usd": made["cost"]["usd"],
                "billed_usd": round(usd, 6),
                "usd_ratio": round(made["cost"]["usd"] / usd, 3),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds, a shorter long text")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved direct/server rounds")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 7)
    texts = COST_TEXTS | {"long": long_text(80 if args.quick else 400)}
    if not ELEVENLABS:
        print("note: elevenlabs skipped (voxserve/engines/elevenlabs.py or its stand-in absent)")

    providers = start_providers()
    results: dict[str, Any] = {"pace_x_realtime": PACE, "rounds": rounds}
    with tempfile.TemporaryDirectory() as tts1_dir, tempfile.TemporaryDirectory() as mini_dir:
        processes = [
            start_voxserve(PORT, tts1_dir, providers, "tts-1"),
            start_voxserve(PORT + 1, mini_dir, providers, openai_server.TOKEN_MODEL),
        ]
        servers = {
            "tts-1": httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=300),
            openai_server.TOKEN_MODEL: httpx.Client(
                base_url=f"http://127.0.0.1:{PORT + 1}", timeout=300
            ),
        }
        try:
            providers.pace(True)
            with httpx.Client(timeout=300) as direct:
                results["overhead"] = overhead(providers, servers["tts-1"], direct, rounds)
            results["rate_limits"] = rate_limited_burst(providers, f"http://127.0.0.1:{PORT}")
            providers.pace(False)
            results["cost"] = cost_accuracy(providers, servers, texts)
        finally:
            for client in servers.values():
                client.close()
            for process in processes:
                process.terminate()
                process.wait(timeout=10)

    print_table(results)
    out = Path(__file__).parent / "results" / "remote.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def print_table(results: dict[str, Any]) -> None:
    rows = []
    for engine, r in results["overhead"].items():
        rows += [
            (f"{engine}: first audio direct / server",
             f"{r['direct_first_ms']} / {r['server_first_ms']} ms", "baseline"),
            (f"{engine}: first audio, server - direct", f"{r['first_audio_overhead_ms']:+} ms",
             "<= +15 ms"),
            (f"{engine}: total direct / server", f"{r['direct_total_s']} / {r['server_total_s']} s",
             "baseline"),
            (f"{engine}: direct / server time (same text)", f"{r['throughput_ratio']}", ">= 0.95"),
            (f"{engine}: provider calls a server request",
             str(r["provider_calls_per_server_request"]), ""),
        ]  # fmt: skip
    burst = results["rate_limits"]
    rows.append((
        f"429s: {burst['clients']} at once, {burst['provider_429s']} provider 429s",
        f"{burst['errors_other_than_429']} other errors", "0",
    ))  # fmt: skip
    rows += [(f"429s: outcome {name}", str(count), "") for name, count in burst["outcomes"].items()]
    for name, r in results["cost"].items():
        rows.append((
            f"cost {name} ({r['segments']} segments): estimated / billed {r['unit']}",
            f"{r['estimated']} / {r['billed']} = {r['ratio']}", "1.0",
        ))  # fmt: skip
        rows.append((f"cost {name}: estimated / billed USD", f"{r['usd_ratio']}", "1.0"))
    width = max(len(row[0]) for row in rows)
    print(f"{'measure':<{width}}  {'value':>24}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>24}  {target}")


if __name__ == "__main__":
    main()
