"""Microsoft Edge's read-aloud service on loopback, as edge-tts 7.3 speaks to it.

The protocol, from edge-tts' source (communicate.py, voices.py, drm.py) and other clients of the
service: a WebSocket at ``/consumer/speech/synthesize/readaloud/edge/v1`` with query parameters
``TrustedClientToken``, ``ConnectionId`` (32 hex digits), ``Sec-MS-GEC`` (the token of the current
five minutes, refused with a 403 carrying the server's ``Date`` otherwise) and
``Sec-MS-GEC-Version``. The client sends two text frames, each of headers, a blank line and a
body: ``Path:speech.config`` (JSON: output format, word or sentence boundaries) and
``Path:ssml`` (with ``X-RequestId``: the SSML, voice, prosody rate, pitch and volume). The service
answers with text frames ``turn.start``, ``response``, an ``audio.metadata`` per word
(``{"Metadata": [{"Type": "WordBoundary", "Data": {"Offset", "Duration", "text": {"Text",
"Length", "BoundaryType"}}}]}``, times in 100 ns ticks), binary frames of audio (a 2-byte
big-endian header length, headers ending in ``Path:audio\\r\\n``, then MP3 bytes; a last one with
no Content-Type and no audio), then ``turn.end``. The voice list is a JSON array at
``/consumer/speech/synthesize/readaloud/voices/list``.

Its speech is real: Piper's, at the SSML's rate, encoded as the MP3 the service sends
(24 kHz, 48 kbit/s CBR, bare frames), with Piper's word timings as the boundaries.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import edge_tts.communicate
import edge_tts.voices
import pytest
from aiohttp import WSMsgType, web
from edge_tts.constants import SEC_MS_GEC_VERSION, TRUSTED_CLIENT_TOKEN
from edge_tts.drm import generate_sec_ms_gec_v2

from tests.providers.loopback import one_per_process, serve
from voxserve.audio.container import ContainerEncoder, ContainerFormat
from voxserve.engines.base import BlockingEngine, SynthesisOptions

BASE = "/consumer/speech/synthesize/readaloud"
SPEECH_PATH = f"{BASE}/edge/v1"
VOICES_PATH = f"{BASE}/voices/list"
OUTPUT_FORMAT = "audio-24khz-48kbitrate-mono-mp3"
TICKS = 10_000_000
FRAME_BYTES = 1200
"""MP3 bytes in one binary frame (0.2 s at 48 kbit/s)."""
VOICE_NAME = re.compile(r"^Microsoft Server Speech Text to Speech Voice \((\w+-\w+), (\w+)\)$")

VOICE_LIST = [
    {
        "Name": f"Microsoft Server Speech Text to Speech Voice ({short[:5]}, {short[6:]})",
        "ShortName": short,
        "Gender": gender,
        "Locale": short[:5],
        "SuggestedCodec": OUTPUT_FORMAT,
        "FriendlyName": f"Microsoft {short[6:-6]} Online (Natural) - {language}",
        "Status": "GA",
        "VoiceTag": {"ContentCategories": ["General"], "VoicePersonalities": ["Friendly"]},
    }
    for short, gender, language in (
        ("en-US-GuyNeural", "Male", "English (United States)"),
        ("en-US-JennyNeural", "Female", "English (United States)"),
        ("en-US-DavisNeural", "Male", "English (United States)"),
        ("en-GB-SoniaNeural", "Female", "English (United Kingdom)"),
        ("en-US-AnaNeural", "Female", "English (United States)"),
        ("de-DE-KatjaNeural", "Female", "German (Germany)"),
        ("pt-BR-FranciscaNeural", "Female", "Portuguese (Brazil)"),
        ("ja-JP-KeitaNeural", "Male", "Japanese (Japan)"),
    )
]
"""What the service lists (a few of its voices, as it describes them)."""


@dataclass(frozen=True)
class Speech:
    """A text spoken: MP3 bytes and its words (text, start, end in seconds)."""

    mp3: bytes
    words: tuple[tuple[str, float, float], ...]


@dataclass
class Connection:
    """One WebSocket as the service saw it."""

    query: dict[str, str]
    headers: dict[str, str]
    frames: list[tuple[dict[str, str], str]] = field(default_factory=list)
    """Text frames received: their headers and body."""
    voice: str | None = None
    rate: str | None = None
    audio_frames: int = 0
    closed: threading.Event = field(default_factory=threading.Event)
    closed_at: float | None = None
    """``time.monotonic()`` when the client's close (or its socket's end) arrived."""


class EdgeServer:
    """The service in a thread of its own. ``failures``: handshake answers to give first, one a
    connection (an HTTP status, or "drop" to close the socket unanswered); ``truncate``: end
    the next connections after their first audio frame, with no ``turn.end``; ``pace``: seconds
    between audio frames (a long utterance streams for a while)."""

    def __init__(self, speak: Callable[[str, float], Speech]):
        self.speak = speak
        self.connections: list[Connection] = []
        self.voice_list_requests: list[dict[str, str]] = []
        self.problems: list[str] = []
        """Anything a client sent that the real service would not take."""
        self.failures: list[int | str] = []
        self.retry_after: str | None = None
        self.truncate = 0
        self.pace = 0.0
        self.clock_offset = 0.0
        """Seconds the service's clock is ahead of ours (the Sec-MS-GEC token it expects)."""
        self.voices_available = True
        self._cache: dict[tuple[str, float], Speech] = {}
        self.url = ""

    def reset(self) -> None:
        self.connections.clear()
        self.voice_list_requests.clear()
        self.problems.clear()
        self.failures.clear()
        self.retry_after, self.truncate, self.pace, self.clock_offset = None, 0, 0.0, 0.0
        self.voices_available = True

    def start(self) -> EdgeServer:
        """Serve on a free loopback port, in a thread of its own (a daemon: it ends with the
        process)."""

        def routes(app: web.Application) -> None:
            app.router.add_get(SPEECH_PATH, self._speech)
            app.router.add_get(VOICES_PATH, self._voices)

        self.url = serve(routes, "Edge")
        return self

    @property
    def wss_url(self) -> str:
        """What edge-tts' ``WSS_URL`` is: the socket's URL with the trusted client token."""
        host = self.url.removeprefix("http://")
        return f"ws://{host}{SPEECH_PATH}?TrustedClientToken={TRUSTED_CLIENT_TOKEN}"

    @property
    def voice_list_url(self) -> str:
        return f"{self.url}{VOICES_PATH}?trustedclienttoken={TRUSTED_CLIENT_TOKEN}"

    def _refusal(self, query: dict[str, str]) -> web.Response | None:
        """A 403 with the service's Date, as the service refuses a stale or wrong token."""
        now = time.time() + self.clock_offset
        expected = generate_sec_ms_gec_v2(now)
        if query.get("Sec-MS-GEC") == expected and query.get("Sec-MS-GEC-Version") == (
            SEC_MS_GEC_VERSION
        ):
            return None
        return web.Response(status=403, headers={"Date": email.utils.formatdate(now, usegmt=True)})

    async def _voices(self, request: web.Request) -> web.Response:
        query = {key: values[0] for key, values in parse_qs(request.query_string).items()}
        self.voice_list_requests.append(query)
        if query.get("trustedclienttoken") != TRUSTED_CLIENT_TOKEN:
            return web.Response(status=403)
        if (refused := self._refusal(query)) is not None:
            return refused
        if not self.voices_available:
            return web.Response(status=503)
        return web.json_response(VOICE_LIST)

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        query = {key: values[0] for key, values in parse_qs(request.query_string).items()}
        if self.failures:
            failure = self.failures.pop(0)
            if failure == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)  # never sent: the socket is gone
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.Response(status=int(failure), headers=headers, text="busy")
        connection = Connection(query, dict(request.headers))
        self.connections.append(connection)
        self._check_handshake(connection)
        if query.get("TrustedClientToken") != TRUSTED_CLIENT_TOKEN:
            return web.Response(status=403)
        if (refused := self._refusal(query)) is not None:
            return refused
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        sender: asyncio.Task | None = None
        try:
            async for message in socket:  # read until the client's close, whatever is sent
                if message.type != WSMsgType.TEXT:
                    self.problems.append(f"unexpected {message.type} frame")
                    continue
                headers, body = _frame(message.data)
                connection.frames.append((headers, body))
                if headers.get("Path") == "ssml" and sender is None:
                    sender = asyncio.create_task(self._answer(socket, connection, headers, body))
        finally:
            connection.closed_at = time.monotonic()
            connection.closed.set()
            if sender is not None:
                sender.cancel()
        return socket

    def _check_handshake(self, connection: Connection) -> None:
        if not re.fullmatch(r"[0-9a-f]{32}", connection.query.get("ConnectionId", "")):
            self.problems.append(f"ConnectionId {connection.query.get('ConnectionId')!r}")
        origin = connection.headers.get("Origin", "")
        if not origin.startswith("chrome-extension://"):
            self.problems.append(f"Origin {origin!r}")
        if "muid=" not in connection.headers.get("Cookie", ""):
            self.problems.append("no muid cookie")

    async def _answer(
        self, socket: web.WebSocketResponse, connection: Connection, headers: dict, body: str
    ) -> None:
        request_id = headers.get("X-RequestId", "")
        self._check_request(connection, headers)
        text, speed = self._read_ssml(connection, body)
        speech = await asyncio.to_thread(self.spoken, text, speed)

        async def send(path: str, payload: dict[str, Any]) -> None:
            await socket.send_str(
                f"X-RequestId:{request_id}\r\nContent-Type:application/json; charset=utf-8\r\n"
                f"Path:{path}\r\n\r\n{json.dumps(payload)}"
            )

        async def audio(data: bytes, content_type: str | None = "audio/mpeg") -> None:
            typed = f"Content-Type:{content_type}\r\n" if content_type else ""
            head = f"X-RequestId:{request_id}\r\n{typed}X-StreamId:{request_id}\r\n"
            head += "Path:audio\r\n"
            await socket.send_bytes(len(head).to_bytes(2, "big") + head.encode() + data)

        await send("turn.start", {"context": {"serviceTag": request_id}})
        await send("response", {"context": {"serviceTag": request_id},
                                "audio": {"type": "inline", "streamId": request_id}})  # fmt: skip
        words = list(speech.words)
        bytes_per_second = 48_000 / 8
        for start in range(0, len(speech.mp3), FRAME_BYTES):
            # Each word's boundary before the audio it starts in, as the service sends them.
            frame_end = (start + FRAME_BYTES) / bytes_per_second
            while words and words[0][1] < frame_end:
                word, begin, end = words.pop(0)
                await send("audio.metadata", {"Metadata": [{"Type": "WordBoundary", "Data": {
                    "Offset": round(begin * TICKS), "Duration": round((end - begin) * TICKS),
                    "text": {"Text": escape(word), "Length": len(word),
                             "BoundaryType": "WordBoundary"}}}]})  # fmt: skip
            await audio(speech.mp3[start : start + FRAME_BYTES])
            connection.audio_frames += 1
            if self.truncate:
                self.truncate -= 1
                await socket.close()
                return
            await asyncio.sleep(self.pace)
        await audio(b"", content_type=None)
        await send("turn.end", {})

    def _check_request(self, connection: Connection, ssml_headers: dict[str, str]) -> None:
        if len(connection.frames) != 2:
            self.problems.append(f"{len(connection.frames)} frames before the SSML")
            return
        config_headers, config = connection.frames[0]
        if config_headers.get("Path") != "speech.config":
            self.problems.append("no speech.config first")
        if config_headers.get("Content-Type") != "application/json; charset=utf-8":
            self.problems.append(f"speech.config Content-Type {config_headers.get('Content-Type')}")
        audio = json.loads(config)["context"]["synthesis"]["audio"]
        if audio["outputFormat"] != OUTPUT_FORMAT:
            self.problems.append(f"output format {audio['outputFormat']}")
        if audio["metadataoptions"]["wordBoundaryEnabled"] != "true":
            self.problems.append("word boundaries not asked for")
        if not re.fullmatch(r"[0-9a-f]{32}", ssml_headers.get("X-RequestId", "")):
            self.problems.append(f"X-RequestId {ssml_headers.get('X-RequestId')!r}")
        if ssml_headers.get("Content-Type") != "application/ssml+xml":
            self.problems.append(f"SSML Content-Type {ssml_headers.get('Content-Type')}")
        if "X-Timestamp" not in ssml_headers or "X-Timestamp" not in config_headers:
            self.problems.append("no X-Timestamp")

    def _read_ssml(self, connection: Connection, body: str) -> tuple[str, float]:
        speak = ElementTree.fromstring(body)
        namespace = "{http://www.w3.org/2001/10/synthesis}"
        voice = speak.find(f"{namespace}voice")
        prosody = voice.find(f"{namespace}prosody") if voice is not None else None
        if voice is None or prosody is None:
            self.problems.append(f"SSML without voice or prosody: {body}")
            return "", 1.0
        name = VOICE_NAME.fullmatch(voice.get("name", ""))
        if name is None:
            self.problems.append(f"voice name {voice.get('name')!r}")
        else:
            connection.voice = f"{name[1]}-{name[2]}"
        connection.rate = prosody.get("rate", "")
        if prosody.get("pitch") != "+0Hz" or prosody.get("volume") != "+0%":
            self.problems.append(f"prosody {prosody.attrib}")
        rate = re.fullmatch(r"([+-]\d+)%", connection.rate)
        if rate is None:
            self.problems.append(f"rate {connection.rate!r}")
            return prosody.text or "", 1.0
        return prosody.text or "", 1 + int(rate[1]) / 100

    def spoken(self, text: str, speed: float) -> Speech:
        key = (text, speed)
        if key not in self._cache:
            self._cache[key] = self.speak(text, speed)
        return self._cache[key]


def _frame(data: str) -> tuple[dict[str, str], str]:
    """A text frame's headers and body, split as the service splits them."""
    head, _, body = data.partition("\r\n\r\n")
    headers = dict(line.split(":", 1) for line in head.split("\r\n") if line)
    return headers, body


MP3 = ContainerFormat(
    "mp3", "audio/mpeg", "mp3", "libmp3lame", "fltp", bit_rate=48_000, sample_rates=(24_000,),
    muxer_options={"id3v2_version": "0", "write_xing": "0"},
)  # fmt: skip
"""The service's format: 24 kHz, 48 kbit/s CBR, bare MPEG frames (no ID3 tag, no Xing frame)."""


def piper_speech(engine: BlockingEngine, voice: str = "joe") -> Callable[[str, float], Speech]:
    """Speech as the stand-in speaks it: Piper's, its words timed from the utterance's start
    (the service's WordBoundary texts have no punctuation)."""

    def speak(text: str, speed: float) -> Speech:
        encoder = ContainerEncoder(MP3, 22050)
        parts, words, offset = [], [], 0.0
        for chunk in engine.synthesize(text, SynthesisOptions(voice, speed=speed)):
            parts.append(encoder.encode(chunk.samples))
            for word in chunk.words:
                bare = word.text.strip(".,;:!?\"'()")
                if bare:
                    words.append((bare, offset + word.start, offset + word.end))
            offset += chunk.duration
        parts.append(encoder.finish())
        return Speech(b"".join(parts), tuple(words))

    return speak


@pytest.fixture(scope="session")
def edge_service(piper_synthesizer) -> Iterator[EdgeServer]:
    """The stand-in, and edge-tts pointed at it. One a process: edge-tts' URLs are its modules'
    globals, so every test module using it shares it."""
    service = one_per_process(
        "edge", piper_synthesizer, lambda piper: EdgeServer(piper_speech(piper)).start()
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(edge_tts.communicate, "WSS_URL", service.wss_url)
        patch.setattr(edge_tts.voices, "VOICE_LIST", service.voice_list_url)
        yield service
