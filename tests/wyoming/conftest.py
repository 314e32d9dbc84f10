"""The real server (``voxserve serve``'s app, Piper's joe) with its Wyoming port open, and a fake
engine beside Piper whose calls can be counted; Home Assistant's client rules, on the wyoming
package's own ``AsyncTcpClient``."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import SynthesizeStopped

from tests.conftest import free_port, running
from tests.fakes import FakeEngine
from voxserve.config import Settings
from voxserve.server.app import create_app
from voxserve.synthesis.synthesizer import Synthesizer

INFO_TIMEOUT = 1.0
"""Home Assistant gives ``describe`` this long (``homeassistant/components/wyoming/data.py``)."""
EVENT_TIMEOUT = 60.0
"""A bound on any other wait, so that a broken server fails a test instead of hanging it."""


@dataclass
class Served:
    port: int
    synthesizer: Synthesizer
    fake: FakeEngine

    def client(self, read_timeout: float = EVENT_TIMEOUT) -> AsyncTcpClient:
        return AsyncTcpClient("127.0.0.1", self.port, read_timeout=read_timeout)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    port = free_port()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("wyoming-data"),
        wyoming={"port": port, "engines": ["piper", "fake"]},
    )
    synthesizer = Synthesizer(settings)
    # 20 pieces of 10 ms a sentence: slow enough that a client can leave mid-way.
    fake = FakeEngine(chunks=20, delay=0.01)
    synthesizer.registry.register(fake)
    with running(create_app(synthesizer=synthesizer)):  # as `voxserve serve` starts it
        yield Served(port, synthesizer, fake)


@dataclass
class Heard:
    """What a client read, in order, as Home Assistant reads it."""

    events: list[Event] = field(default_factory=list)

    def of(self, kind: type) -> list:
        return [kind.from_event(event) for event in self.events if kind.is_type(event.type)]

    @property
    def types(self) -> list[str]:
        return [event.type for event in self.events]

    def wav(self) -> bytes:
        """The WAV Home Assistant makes: one header from the first audio-start, every chunk's
        audio after it; each chunk must be in the audio-start's format."""
        (start, *_) = self.of(AudioStart)
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setframerate(start.rate)
            wav.setsampwidth(start.width)
            wav.setnchannels(start.channels)
            for chunk in self.of(AudioChunk):
                assert (chunk.rate, chunk.width, chunk.channels) == (
                    start.rate, start.width, start.channels,
                )  # fmt: skip
                wav.writeframes(chunk.audio)
        return buffer.getvalue()


async def read_until(client: AsyncTcpClient, *ends: type) -> Heard:
    """Events until one of ``ends`` (included) or the end of the connection."""
    heard = Heard()
    while (event := await client.read_event()) is not None:
        heard.events.append(event)
        if any(end.is_type(event.type) for end in ends):
            break
    return heard


async def one_shot(client: AsyncTcpClient, *events: Event) -> Heard:
    """Home Assistant's ``async_get_tts_audio``: the first audio-stop ends it."""
    for event in events:
        await client.write_event(event)
    return await read_until(client, AudioStop)


async def streamed(client: AsyncTcpClient, *events: Event) -> Heard:
    """Home Assistant's ``async_stream_tts_audio``: read until synthesize-stopped."""
    for event in events:
        await client.write_event(event)
    return await read_until(client, SynthesizeStopped)


async def describe(served: Served) -> Info:
    async with served.client(read_timeout=INFO_TIMEOUT) as client:
        await client.write_event(Describe().event())
        heard = await read_until(client, Info)
    (info,) = heard.of(Info)
    return info


def errors(heard: Heard) -> list[Error]:
    return heard.of(Error)


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getnframes() / wav.getframerate()
