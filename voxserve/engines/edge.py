"""Edge: Microsoft Edge's online "Read aloud" voices, through the ``edge-tts`` package.

Free: no key, no account, no cost (``cost`` stays None). Each segment is one WebSocket to
Microsoft's service (``edge_tts.Communicate``): SSML in, MP3 (audio-24khz-48kbitrate-mono-mp3)
and word boundaries out, decoded as they arrive, so first audio does not wait for the utterance.

    [engines.edge]
    timeout = 60          # seconds without a message from the service before the call fails
    connect_timeout = 10
    proxy = "http://..."  # else the environment's HTTPS_PROXY (aiohttp's trust_env)

Voices are the service's voice list, fetched by ``load`` and kept on disk in the data directory,
so that ``voices()`` lists them offline and before the next load; never fetched, a small built-in
list (the speaker-role voices among them) stands in. Each voice speaks its ``Locale``.

Words: the service's WordBoundary events, timed in 100 ns ticks from the start of the utterance.
A chunk of audio goes out once the service has told of a word starting after it, so that every
word is in the chunk its audio starts in (``AudioChunk.words``), timed from that chunk's start.

Failures: no connection, a dropped or silent socket, a 429 or 5xx at the handshake are passing
(``retryable``: ``Engine.stream`` tries again while none of the segment's audio has gone out); a
403 is Microsoft refusing the client (its Sec-MS-GEC token), which trying again does not mend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.engines import remote
from voxserve.engines.base import (
    Capabilities,
    Engine,
    EngineSettings,
    Segment,
    SettingsGiven,
    Voice,
)
from voxserve.errors import EngineError, EngineUnavailableError, UpstreamError, VoxserveError

logger = logging.getLogger("voxserve.engines.edge")

PROVIDER = "Edge TTS"
SAMPLE_RATE = 24000
"""audio-24khz-48kbitrate-mono-mp3, the one format edge-tts asks for."""
TICKS_PER_SECOND = 10_000_000
MAX_INPUT_CHARS = 1000
"""Well under the 4096 bytes of escaped UTF-8 edge-tts sends in one SSML request, so that a
segment is one request, its word offsets one timeline."""
SPEED_RANGE = (0.5, 2.0)
"""SSML prosody ``rate``: Azure's voices take 0.5 to 2 times their own rate."""
DEFAULT_CONCURRENCY = 4
VOICE_LIST_TIMEOUT = 15.0
VOICES_FILE = Path("engines") / "edge" / "voices.json"
"""Under the data directory: the last voice list fetched."""

FALLBACK_VOICES: tuple[dict[str, str], ...] = (
    # The speaker roles (config.speakers), then a voice for a few widely spoken languages, as
    # the service's voice list names them.
    {"ShortName": "en-US-GuyNeural", "Locale": "en-US", "Gender": "Male"},
    {"ShortName": "en-US-JennyNeural", "Locale": "en-US", "Gender": "Female"},
    {"ShortName": "en-US-DavisNeural", "Locale": "en-US", "Gender": "Male"},
    {"ShortName": "en-GB-SoniaNeural", "Locale": "en-GB", "Gender": "Female"},
    {"ShortName": "en-US-AriaNeural", "Locale": "en-US", "Gender": "Female"},
    {"ShortName": "en-US-EmmaMultilingualNeural", "Locale": "en-US", "Gender": "Female"},
    {"ShortName": "en-GB-RyanNeural", "Locale": "en-GB", "Gender": "Male"},
    {"ShortName": "de-DE-KatjaNeural", "Locale": "de-DE", "Gender": "Female"},
    {"ShortName": "de-DE-ConradNeural", "Locale": "de-DE", "Gender": "Male"},
    {"ShortName": "fr-FR-DeniseNeural", "Locale": "fr-FR", "Gender": "Female"},
    {"ShortName": "es-ES-ElviraNeural", "Locale": "es-ES", "Gender": "Female"},
    {"ShortName": "pt-BR-FranciscaNeural", "Locale": "pt-BR", "Gender": "Female"},
    {"ShortName": "it-IT-ElsaNeural", "Locale": "it-IT", "Gender": "Female"},
    {"ShortName": "ja-JP-NanamiNeural", "Locale": "ja-JP", "Gender": "Female"},
    {"ShortName": "zh-CN-XiaoxiaoNeural", "Locale": "zh-CN", "Gender": "Female"},
)


class EdgeSettings(EngineSettings):
    """``[engines.edge]``."""

    timeout: int = Field(60, ge=1)
    """Seconds without a message from the service before a call fails (edge-tts'
    ``receive_timeout``)."""
    connect_timeout: int = Field(10, ge=1)
    proxy: str | None = Field(None, repr=False)  # it may hold a password
    """An HTTP proxy to reach the service through; None: the environment's (``HTTPS_PROXY``)."""


class EdgeEngine(Engine):
    name = "edge"
    extra = "edge"
    requires = ("edge_tts",)
    Settings = EdgeSettings
    voices_listed_at_load = True
    settings: EdgeSettings

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        self._listed: tuple[dict[str, Any], ...] | None = None
        """The voice list as the service gave it (by ``load``, or from the file it left)."""

    def describe(self) -> Capabilities:
        locales = dict.fromkeys(voice["Locale"] for voice in self._voice_list())
        return Capabilities(
            sample_rate=SAMPLE_RATE,
            languages=tuple(locales),
            max_input_chars=MAX_INPUT_CHARS,
            speed_range=SPEED_RANGE,
            streaming=True,
            concurrency=DEFAULT_CONCURRENCY,
            word_timings=True,
        )

    def voices(self) -> list[Voice]:
        return [_voice(entry, self.name) for entry in self._voice_list()]

    def load(self) -> None:
        try:
            listed = asyncio.run(self._fetch_voice_list())
        except Exception as error:  # offline: the last list, else the built-in one, serves
            logger.warning(
                "the Edge voice list could not be fetched (%s); using the %s list",
                remote.redact(str(error) or type(error).__name__, ()),
                "saved" if self._saved_voice_list() else "built-in",
            )
            return
        self._listed = listed
        self._save_voice_list(listed)
        # Its languages are those of the voices just listed.
        self.__dict__.pop("capabilities", None)

    async def generate(self, segment: Segment) -> AsyncIterator[AudioChunk]:
        import edge_tts

        from voxserve.audio.stream_decode import StreamDecoder

        options = segment.voicing.options
        communicate = edge_tts.Communicate(
            segment.text,
            options.voice,
            rate=f"{round((options.speed - 1) * 100):+d}%",
            boundary="WordBoundary",
            proxy=self.settings.proxy,
            connect_timeout=self.settings.connect_timeout,
            receive_timeout=self.settings.timeout,
        )
        timeline = _Timeline(StreamDecoder("mp3float", SAMPLE_RATE))
        produced = False
        try:
            # Closing this stream (the client went) leaves edge-tts' inner generator, which holds
            # the socket, without a reference: asyncio's async-generator finalizer closes it, and
            # with it the WebSocket, at the loop's next turn (test_edge checks the service sees
            # the close). A connector of our own to close instead would break edge-tts' second
            # try after a 403 (each of its sessions closes the connector it is given).
            async with contextlib.aclosing(communicate.stream()) as messages:
                async for message in messages:
                    if message["type"] == "audio":
                        await asyncio.to_thread(timeline.feed, message["data"])
                    elif message["type"] == "WordBoundary":
                        timeline.word(message)
                    for chunk in timeline.ready():
                        produced = True
                        yield chunk
            # edge-tts counts a turn's audio bytes and clears the count at the turn's end; a
            # socket that closes early ends its stream quietly, the count still standing.
            if communicate.state.get("chunk_audio_bytes"):
                raise UpstreamError(
                    f"{PROVIDER} closed the connection before the end of the speech",
                    code="edge_truncated",
                    retryable=True,
                )
            for chunk in timeline.finish():
                yield chunk
        except VoxserveError:
            raise
        except edge_tts.exceptions.NoAudioReceived:
            if produced:
                raise UpstreamError(
                    f"{PROVIDER} stopped sending audio mid-speech",
                    code="edge_truncated",
                    retryable=True,
                ) from None
            return  # nothing to say in this text: Engine.stream's NoAudioError tells the client
        except Exception as error:
            raise _as_ours(error) from None

    async def _fetch_voice_list(self) -> tuple[dict[str, Any], ...]:
        import edge_tts

        async with asyncio.timeout(VOICE_LIST_TIMEOUT):  # edge-tts sets none of its own
            listed = await edge_tts.list_voices(proxy=self.settings.proxy)
        entries = tuple(entry for entry in listed if entry.get("ShortName") and entry.get("Locale"))
        if not entries:
            raise ValueError("the service listed no voices")
        return entries

    def _voice_list(self) -> tuple[dict[str, Any], ...]:
        if self._listed is None:
            self._listed = self._saved_voice_list() or FALLBACK_VOICES
        return self._listed

    def _voices_path(self) -> Path | None:
        return Path(self.data_dir) / VOICES_FILE if self.data_dir else None

    def _saved_voice_list(self) -> tuple[dict[str, Any], ...] | None:
        path = self._voices_path()
        if path is None or not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            entries = tuple(entry for entry in saved if entry["ShortName"] and entry["Locale"])
        except (OSError, ValueError, TypeError, KeyError) as error:
            logger.warning("ignoring the saved Edge voice list %s: %s", path, error)
            return None
        return entries or None

    def _save_voice_list(self, listed: tuple[dict[str, Any], ...]) -> None:
        path = self._voices_path()
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(list(listed), file)
            os.replace(temporary, path)  # a reader sees the old list or the new, never half
        except OSError as error:  # a read-only data directory: the list is kept in memory
            logger.warning("the Edge voice list was not saved to %s: %s", path, error)


def _voice(entry: dict[str, Any], engine: str) -> Voice:
    tags = entry.get("VoiceTag") or {}
    traits = [entry.get("Gender") or "", *(tags.get("VoicePersonalities") or ())]
    return Voice(
        entry["ShortName"],
        engine,
        entry.get("FriendlyName") or entry["ShortName"],
        entry["Locale"],
        ", ".join(trait for trait in traits if trait),
    )


class _Timeline:
    """Decoded audio and the words timed against it: audio is handed on up to the start of the
    latest word told of (no word can start before it any more), each chunk with its words."""

    def __init__(self, decoder):
        self._decoder = decoder
        self._pending = np.zeros(0, dtype=np.float32)
        self._start = 0.0
        """Seconds of audio handed on before ``_pending``."""
        self._words: list[WordTiming] = []
        self._told = 0.0
        """Where the latest word starts: audio before it is complete in words."""

    def feed(self, data: bytes) -> None:
        self._pending = np.concatenate((self._pending, self._decoder.feed(data)))

    def word(self, message: dict[str, Any]) -> None:
        start = message["offset"] / TICKS_PER_SECOND
        end = start + message["duration"] / TICKS_PER_SECOND
        self._words.append(WordTiming(message["text"], start, end))
        self._told = max(self._told, start)

    def ready(self) -> list[AudioChunk]:
        """The audio before the latest word's start, if any is pending."""
        count = min(len(self._pending), round((self._told - self._start) * SAMPLE_RATE))
        return [self._take(count)] if count > 0 else []

    def finish(self) -> list[AudioChunk]:
        """The rest, with every word not yet handed on."""
        self._pending = np.concatenate((self._pending, self._decoder.finish()))
        return [self._take(len(self._pending), last=True)] if len(self._pending) else []

    def _take(self, count: int, *, last: bool = False) -> AudioChunk:
        samples, self._pending = self._pending[:count], self._pending[count:]
        end = self._start + count / SAMPLE_RATE
        inside = [word for word in self._words if last or word.start < end]
        self._words = self._words[len(inside) :]
        words = tuple(_within(word.shifted(-self._start)) for word in inside)
        self._start = end
        return AudioChunk(samples, SAMPLE_RATE, words)


def _within(word: WordTiming) -> WordTiming:
    """A word timed from its chunk: never before the chunk's start."""
    start = max(word.start, 0.0)
    return WordTiming(word.text, start, max(word.end, start))


def _as_ours(error: Exception) -> VoxserveError:
    """edge-tts' and aiohttp's failures as ours (the module's docstring)."""
    import aiohttp
    import edge_tts

    if isinstance(error, aiohttp.ClientResponseError):  # the WebSocket handshake was refused
        if error.status in (401, 403):
            return EngineUnavailableError(
                f"{PROVIDER} refused the connection (HTTP {error.status}): Microsoft changes what "
                "it accepts from time to time; check the system clock, and update edge-tts "
                "(pip install -U edge-tts)",
                code="edge_forbidden",
            )
        return remote.refusal(
            PROVIDER, error.status, error.headers or {}, error.message, engine="edge",
            key_from="",  # 401 and 403 are answered above: Edge takes no key
        )  # fmt: skip
    if isinstance(error, edge_tts.exceptions.SkewAdjustmentError):
        return EngineUnavailableError(
            f"{PROVIDER} refused the connection and gave no time to correct the clock by: {error}",
            code="edge_forbidden",
        )
    if isinstance(
        error,
        (aiohttp.ClientError, OSError, TimeoutError, edge_tts.exceptions.WebSocketError),
    ):
        return remote.unreachable(PROVIDER, error, engine="edge")
    if isinstance(error, edge_tts.exceptions.EdgeTTSException):
        return EngineError(
            f"{PROVIDER} answered something unexpected: {error}", code="edge_bad_response"
        )
    return EngineError(f"engine 'edge' failed: {error}", code="engine_failed")
