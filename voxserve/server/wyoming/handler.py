"""One Wyoming connection: speech out (one-shot and streamed text) and speech in.

- ``describe`` -> ``info``, prepared when the server started.
- ``synthesize`` (outside a stream): one ``audio-start``, the chunks, one ``audio-stop``, all
  in one format (16-bit mono PCM at the voice's rate).
- ``synthesize-start``, ``synthesize-chunk``... (text at any boundary, re-split into
  sentences), ``synthesize-stop``: one ``audio-start`` once the voice is known, audio as each
  sentence is spoken, one ``audio-stop``, then ``synthesize-stopped``, even for no text. The
  ``synthesize`` a client sends inside a stream, for servers that cannot stream, is ignored.
- ``transcribe``, ``audio-start``, ``audio-chunk``..., ``audio-stop`` -> ``transcript``.

Errors are ``error`` events (``code``: the one every transport uses, ``text``: its message).
One that ends a request ends the connection after it, as wyoming-piper's do: Home Assistant
does not read ``error`` events, it waits for ``audio-stop`` (one-shot) or for the end of the
connection, which is how it learns that the request failed. In a stream, the ``error`` is
followed by ``audio-stop`` and, once the client's ``synthesize-stop`` comes, by
``synthesize-stopped``, which is what Home Assistant waits for there. A mistake in the order
of events (a chunk outside a stream) is told, and the connection goes on.

A client that goes away stops its synthesis: the audio is made in a task of its own while the
connection is read, and the end of the connection cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStopped

from voxserve.audio import AudioChunk as Frames
from voxserve.errors import InvalidRequestError, invalid_fields
from voxserve.request import SpeechOptions, SpeechRequest
from voxserve.server.auth import Principal, RateLimiter, acting_for, charge_characters
from voxserve.server.metrics import ServerMetrics
from voxserve.server.spending import Spending, holding
from voxserve.server.wyoming.hearing import Hearing
from voxserve.server.wyoming.voices import voice_fields
from voxserve.streaming import client_error, encode_chunks
from voxserve.synthesis.cost import estimate, text_usd, total_usd
from voxserve.synthesis.synthesizer import Synthesizer, Voicing
from voxserve.synthesis.text_stream import TextStream

logger = logging.getLogger("voxserve.server.wyoming")
WIDTH, CHANNELS = 2, 1  # 16-bit mono, the PCM every Wyoming client plays
Options = TypeVar("Options", bound=SpeechOptions)


@dataclass
class Service:
    """What every connection shares: the process's synthesizer and spending, the rate limiter
    of the HTTP app's access control (an address's limits hold across both), and ``info``."""

    synthesizer: Synthesizer
    spending: Spending
    limiter: RateLimiter
    info: Event
    metrics: ServerMetrics | None = None


class Stream(enum.Enum):
    NONE = "none"  # no stream: a synthesize is a one-shot
    OPEN = "open"  # taking text
    ENDING = "ending"  # synthesize-stop received, audio still going out
    FAILED = "failed"  # refused or failed: its text is dropped until synthesize-stop


class ProtocolError(InvalidRequestError):
    """An event out of order: told, and the connection goes on."""

    def __init__(self, message: str):
        super().__init__(message, code="unexpected_event")


class WyomingHandler(AsyncEventHandler):
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service: Service
    ):
        super().__init__(reader, writer)
        self.service = service
        self.synthesizer = service.synthesizer
        auth = self.synthesizer.settings.auth
        address = (writer.get_extra_info("peername") or ("unknown",))[0]
        # Wyoming carries no key: a connection is its address, as HTTP's are without keys.
        self.principal = Principal(
            f"address:{address}", None, auth.requests_per_minute, auth.characters_per_minute
        )
        self.stream = Stream.NONE
        self.text: TextStream | None = None
        self.received = 0  # characters of text the stream has been sent
        self.audio_open = False  # an audio-start was sent, and its audio-stop not yet
        self.speaking: asyncio.Task | None = None
        self.hearing: Hearing | None = None
        self._write_lock = asyncio.Lock()

    async def run(self) -> None:
        # Inside, and in the tasks started there: the address's limits, the connection's holds.
        with (
            acting_for(self.principal, self.service.limiter),
            holding(lambda: self.service.spending),
        ):
            await super().run()

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.service.info)
            return True
        handler = self._handlers.get(event.type)
        if handler is None:
            return True  # what this server does not do (ping, wake...) is dropped, as is usual
        try:
            await handler(event)
        except Exception as error:
            await self.tell(error, f"answering a Wyoming {event.type}")
            # A failed stream goes on to its synthesize-stop, which Home Assistant waits for;
            # any other failed request ends the connection.
            return isinstance(error, ProtocolError) or self.stream is Stream.FAILED
        return True

    @functools.cached_property
    def _handlers(self) -> dict[str, Callable[[Event], Awaitable[None]]]:
        return {
            "synthesize": self.on_synthesize,
            "synthesize-start": self.on_synthesize_start,
            "synthesize-chunk": self.on_synthesize_chunk,
            "synthesize-stop": self.on_synthesize_stop,
            "transcribe": self.on_transcribe,
            "audio-start": self.on_audio_start,
            "audio-chunk": self.on_audio_chunk,
            "audio-stop": self.on_audio_stop,
        }

    async def disconnect(self) -> None:
        """The client has gone (or the connection ends): its synthesis stops."""
        await self.stop_speaking()

    # --- one-shot ----------------------------------------------------------------------------

    async def on_synthesize(self, event: Event) -> None:
        if self.stream is not Stream.NONE:
            return  # the stream's text again, for servers that cannot stream
        await self.speaking_done()  # a request sent before the last one was answered waits
        self.take_request()
        text = Synthesize.from_event(event).text
        speech = self.checked(SpeechRequest, event, input=text, response_format="pcm")
        prepared = await asyncio.to_thread(self.synthesizer.prepare, speech)
        charge_characters(len(text))
        self.service.spending.check(total_usd(estimate(prepared.segments)))
        chunks = self.synthesizer.stream(prepared)
        self.speaking = asyncio.create_task(self.speak_once(chunks, prepared.sample_rate))

    async def speak_once(self, chunks: AsyncIterator[Frames], rate: int) -> None:
        try:
            await self.send_audio(chunks, rate)
            await self.close_audio()
        except Exception as error:
            self.speaking = None  # stopping the connection must not cancel what tells of it
            await self.tell(error, "speaking a Wyoming synthesize")
            await self.stop()
        else:
            self.speaking = None

    # --- streaming ---------------------------------------------------------------------------

    async def on_synthesize_start(self, event: Event) -> None:
        if self.stream in (Stream.OPEN, Stream.FAILED):
            raise ProtocolError("a stream is open: send synthesize-stop first")
        await self.speaking_done()
        self.stream, self.received = Stream.FAILED, 0  # until the voice is known to be good
        self.take_request()
        resolver = self.synthesizer.resolver
        voicing = await resolver.resolve(self.checked(SpeechOptions, event))
        self.text = TextStream(
            voicing, self.synthesizer.plan_options(voicing.engine), voicing_for=resolver.for_text
        )
        self.stream = Stream.OPEN
        await self.open_audio(voicing.sample_rate)
        self.speaking = asyncio.create_task(self.speak_stream(voicing))

    async def on_synthesize_chunk(self, event: Event) -> None:
        if self.stream is Stream.FAILED:
            return
        if self.stream is not Stream.OPEN:
            raise ProtocolError("send synthesize-start before synthesize-chunk")
        text = SynthesizeChunk.from_event(event).text
        limit = self.synthesizer.settings.max_stream_chars
        try:
            if self.received + len(text) > limit:
                raise InvalidRequestError(
                    f"a stream may hold {limit} characters of text (max_stream_chars)",
                    param="text", code="utterance_too_long",
                )  # fmt: skip
            self.service.spending.check(text_usd(self.text.voicing, text))
            charge_characters(len(text))
        except Exception as error:  # refused before it is charged or spent: the stream stops
            await self.stop_speaking()
            self.stream = Stream.FAILED
            await self.tell(error, "taking a Wyoming synthesize-chunk")
            await self.close_audio()
            return
        self.received += len(text)
        await self.text.push_in_thread(text)

    async def on_synthesize_stop(self, event: Event) -> None:
        if self.stream is Stream.FAILED:
            await self.end_stream()
            return
        if self.stream is not Stream.OPEN:
            raise ProtocolError("send synthesize-start before synthesize-stop")
        self.stream = Stream.ENDING
        await self.text.end_in_thread()  # speak_stream ends the stream once this is spoken

    async def speak_stream(self, voicing: Voicing) -> None:
        rendered = self.synthesizer.render(
            self.text.segments(), [voicing.engine], voicing.sample_rate
        )
        try:
            await self.send_audio(rendered, voicing.sample_rate)
        except Exception as error:
            await self.tell(error, "speaking a Wyoming stream")
            if self.stream is Stream.OPEN:
                self.text.close()
                self.stream = Stream.FAILED  # its text is dropped until synthesize-stop
        self.speaking = None
        await self.close_audio()
        if self.stream is Stream.ENDING:
            await self.end_stream()

    async def end_stream(self) -> None:
        self.stream, self.text = Stream.NONE, None
        await self.write_event(SynthesizeStopped().event())

    # --- speech to text ----------------------------------------------------------------------

    async def on_transcribe(self, event: Event) -> None:
        self.take_request()
        language = Transcribe.from_event(event).language
        self.hearing = Hearing(language, self.synthesizer.settings.wyoming.max_audio_seconds)

    async def on_audio_start(self, event: Event) -> None:
        if self.hearing is None:  # transcribe is optional: audio alone asks for its words
            await self.on_transcribe(Transcribe().event())
        self.hearing.start(AudioStart.from_event(event))

    async def on_audio_chunk(self, event: Event) -> None:
        if self.hearing is None:
            raise ProtocolError("send transcribe or audio-start before audio-chunk")
        self.hearing.add(AudioChunk.from_event(event))

    async def on_audio_stop(self, event: Event) -> None:
        if self.hearing is None:
            raise ProtocolError("send transcribe or audio-start before audio-stop")
        hearing, self.hearing = self.hearing, None
        text = await hearing.transcript(self.synthesizer.resolver.transcriber)
        language = hearing.language or self.synthesizer.settings.wyoming.stt_languages[0]
        await self.write_event(Transcript(text=text, language=language).event())

    # --- audio and errors --------------------------------------------------------------------

    async def open_audio(self, rate: int) -> None:
        self.audio_open = True
        await self.write_event(AudioStart(rate=rate, width=WIDTH, channels=CHANNELS).event())

    async def send_audio(self, items: AsyncIterator, rate: int) -> None:
        """The audio of ``items`` (chunks; segment timings are skipped) as ``audio-chunk``s, after
        one ``audio-start`` (unless the stream sent it already)."""
        if not self.audio_open:
            await self.open_audio(rate)
        async with contextlib.aclosing(encode_chunks(_frames(items), "pcm", rate)) as pcm:
            async for audio in pcm:
                chunk = AudioChunk(rate=rate, width=WIDTH, channels=CHANNELS, audio=audio)
                await self.write_event(chunk.event())

    async def close_audio(self) -> None:
        if self.audio_open:
            self.audio_open = False
            await self.write_event(AudioStop().event())

    async def tell(self, error: Exception, doing: str) -> None:
        """Send ``error`` as an ``error`` event, unless the client has gone."""
        if self.writer.is_closing():
            return
        told = client_error(error, logger, doing)
        code = told.code or "internal_error"
        if self.service.metrics is not None:
            self.service.metrics.errors.labels("wyoming", code).inc()
        with contextlib.suppress(ConnectionError):
            await self.write_event(Error(text=told.message, code=code).event())

    async def write_event(self, event: Event) -> None:
        # A stream's audio (its task) and the answers to the connection's events take turns.
        async with self._write_lock:
            await super().write_event(event)

    # --- the work in progress ----------------------------------------------------------------

    def checked(self, model: type[Options], event: Event, **fields: Any) -> Options:
        """The request ``event`` makes (its ``voice`` read by `voice_fields`), checked."""
        voice = voice_fields(event.data.get("voice"), self.synthesizer.registry)
        try:
            return model(**voice, **fields)
        except ValidationError as error:
            raise invalid_fields(error.errors()) from error

    def take_request(self) -> None:
        """Each request counts against the address's requests per minute, as HTTP's do."""
        principal = self.principal
        self.service.limiter.take(principal, "requests", principal.requests_per_minute, 1)

    async def speaking_done(self) -> None:
        if self.speaking is not None:
            await asyncio.gather(self.speaking, return_exceptions=True)

    async def stop_speaking(self) -> None:
        if self.text is not None:
            self.text.close()
        speaking, self.speaking = self.speaking, None
        if speaking is not None and speaking is not asyncio.current_task():
            speaking.cancel()
            await asyncio.gather(speaking, return_exceptions=True)


async def _frames(items: AsyncIterator) -> AsyncIterator[Frames]:
    async with contextlib.aclosing(items):
        async for item in items:
            if isinstance(item, Frames):
                yield item
