"""The Wyoming server alone: ``voxserve wyoming``, the address's limits, zeroconf, its host."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from tests.conftest import free_port
from tests.fakes import FakeEngine, make_synthesizer
from tests.wyoming.conftest import (
    EVENT_TIMEOUT,
    INFO_TIMEOUT,
    errors,
    one_shot,
    read_until,
    streamed,
)
from voxserve.config import ConfigError, Settings, load_settings
from voxserve.server.spending import Spending
from voxserve.server.wyoming import wyoming_server
from voxserve.server.wyoming.server import SERVICE_TYPE, WyomingServer


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **settings) -> AsyncIterator[WyomingServer]:
    """A fake engine's Wyoming server on a free loopback port, in this test's event loop."""
    wyoming = {"port": free_port(), **settings.pop("wyoming", {})}
    synthesizer = make_synthesizer(FakeEngine(), data_dir=tmp_path, wyoming=wyoming, **settings)
    spending = Spending(tmp_path)
    server = wyoming_server(synthesizer, spending)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        spending.close()


def client_of(server: WyomingServer) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", server.settings.port, read_timeout=EVENT_TIMEOUT)


async def test_text_over_an_address_characters_per_minute_stops_the_stream(tmp_path: Path):
    async with serving(tmp_path, auth={"characters_per_minute": 20}) as server:
        async with client_of(server) as client:
            heard = await streamed(
                client, SynthesizeStart().event(), SynthesizeChunk(text="Hi there. ").event(),
                SynthesizeChunk(text="This is rather more than twenty.").event(),
                SynthesizeChunk(text="Dropped.").event(), SynthesizeStop().event(),
            )  # fmt: skip

    (error,) = errors(heard)
    assert error.code == "characters_rate_limited"
    assert heard.types.count("audio-start") == heard.types.count("audio-stop") == 1
    assert heard.types[-2:] == ["audio-stop", "synthesize-stopped"]


async def test_a_full_engine_refuses_the_next_request_with_an_error_event(tmp_path: Path):
    async with serving(tmp_path, max_streams_per_engine=1, max_queue=0) as server:
        async with client_of(server) as holder, client_of(server) as refused:
            # A stream holds the engine's one place while it waits for its text.
            await holder.write_event(SynthesizeStart().event())
            await holder.write_event(Describe().event())
            await read_until(holder, Info)
            heard = await one_shot(refused, Synthesize(text="Me too.").event())

    assert heard.types == ["audio-start", "error"]  # then the connection ended
    assert errors(heard)[0].code == "overloaded"


async def test_zeroconf_announces_the_server_where_it_listens(tmp_path: Path):
    wyoming = {"zeroconf": True, "zeroconf_name": "voxserve-test"}
    async with serving(tmp_path, wyoming=wyoming) as server:
        browser = AsyncZeroconf(interfaces=["127.0.0.1"])  # loopback only: nothing leaves
        try:
            found = AsyncServiceInfo(SERVICE_TYPE, f"voxserve-test.{SERVICE_TYPE}")
            assert await found.async_request(browser.zeroconf, 3000)
        finally:
            await browser.async_close()

    assert found.port == server.settings.port
    assert found.parsed_addresses() == ["127.0.0.1"]


def test_a_non_loopback_host_needs_allow_unauthenticated():
    with pytest.raises(ConfigError, match="allow_unauthenticated"):
        load_settings(overrides={"wyoming": {"port": 10200, "host": "0.0.0.0"}}, environ={})
    allowed = {"port": 10200, "host": "0.0.0.0", "allow_unauthenticated": True}
    assert Settings(wyoming=allowed).wyoming.host == "0.0.0.0"
    assert Settings(wyoming={"host": "0.0.0.0"}).wyoming.port is None  # off: nothing to refuse


def test_voxserve_wyoming_serves_alone(tmp_path: Path):
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if "VOXSERVE_" not in key}
    environment["VOXSERVE_DATA_DIR"] = str(tmp_path)
    command = [sys.executable, "-m", "voxserve", "wyoming", "--port", str(port), "--no-preload"]
    process = subprocess.Popen(command, env=environment)
    try:
        deadline = time.monotonic() + EVENT_TIMEOUT
        while (info := asyncio.run(_describe(port))) is None:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert "piper/joe" in {voice.name for voice in info.tts[0].voices}


async def _describe(port: int) -> Info | None:
    """The server's info, within Home Assistant's second; None while nothing listens."""
    with contextlib.suppress(OSError):
        async with AsyncTcpClient("127.0.0.1", port, read_timeout=INFO_TIMEOUT) as client:
            await client.write_event(Describe().event())
            return Info.from_event((await read_until(client, Info)).events[-1])
    return None
