"""What the client sends and how it reads the answers, the same for the sync and async clients.

Nothing here does I/O: the clients move bytes, these functions and readers give them meaning.
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voxserve.audio.decode import decode_pcm16
from voxserve.audio.frames import AudioChunk

DEFAULT_BASE_URL = "http://127.0.0.1:8880"
DEFAULT_TIMEOUT = 60.0
SPEECH_PATH = "/v1/audio/speech"
SPEECH_STREAM_PATH = "/v1/audio/speech/stream"
TTS_PATH = "/ws/tts"
# /ws/tts sends frames of at most 1 MiB, websockets' default limit; room for a larger server.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# How often a receiver waiting on the server wakes to check its timeout.
POLL_SECONDS = 0.25


class ClientError(Exception):
    """The server refused a request, answered something unreadable, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        """The HTTP status; None for a WebSocket error message or a network failure."""
        self.code = code
        """The server's error code (``voice_not_found``, ``unsupported_language``, ...) or the
        client's: ``connection_error``, ``connection_closed``, ``timeout``, ``protocol_error``."""
        self.param = param
        """The request field that is wrong, when there is one."""
        self.retry_after = retry_after
        """Seconds to wait before trying again (429 answers)."""

    def __str__(self) -> str:
        prefix = " ".join(str(part) for part in (self.status, self.code) if part is not None)
        return f"{prefix}: {self.message}" if prefix else self.message


@dataclass(frozen=True)
class Segment:
    """A piece of text the server has spoken, and where it sits in the utterance's audio."""

    index: int
    text: str
    start_ms: int
    end_ms: int


def without_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def ws_url(base_url: str, path: str) -> str:
    """The WebSocket address of `path` on the server at `base_url` (http -> ws, https -> wss)."""
    parts = urlsplit(base_url)
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes:
        raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")
    return urlunsplit((schemes[parts.scheme], parts.netloc, parts.path.rstrip("/") + path, "", ""))


def error_from_http(
    status: int, headers: Mapping[str, str], content: bytes, default: str = "the server refused"
) -> ClientError:
    """The error an HTTP answer carries, read from OpenAI's ``{"error": {...}}`` body."""
    message, code, param = f"{default} (HTTP {status})", None, None
    try:
        error = json.loads(content)["error"]
        message = str(error.get("message") or message)
        code, param = error.get("code"), error.get("param")
    except (ValueError, KeyError, TypeError, AttributeError):
        text = content.decode("utf-8", "replace").strip()
        message = text[:500] or message
    retry_after = None
    if status == 429:
        value = headers.get("retry-after", "")
        retry_after = int(value) if value.strip().isdigit() else None
    return ClientError(message, status=status, code=code, param=param, retry_after=retry_after)


def http_failure(error: httpx.HTTPError) -> ClientError:
    code = "timeout" if isinstance(error, httpx.TimeoutException) else "connection_error"
    return ClientError(f"{type(error).__name__}: {error}", code=code)


def ws_failure(error: Exception) -> ClientError:
    """A websockets or socket error as a ClientError (raise it ``from`` the original)."""
    if isinstance(error, InvalidStatus):
        response = error.response
        return error_from_http(
            response.status_code,
            response.headers,
            bytes(response.body or b""),
            default="the server refused the WebSocket connection",
        )
    if isinstance(error, ConnectionClosed):
        return ClientError(f"the server closed the connection ({error})", code="connection_closed")
    if isinstance(error, TimeoutError):
        return ClientError("timed out talking to the server", code="timeout")
    return ClientError(f"{type(error).__name__}: {error}", code="connection_error")


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as error:
        raise ClientError(
            f"the server's answer is not JSON: {error}",
            status=response.status_code,
            code="protocol_error",
        ) from error


def protocol_error(message: str) -> ClientError:
    return ClientError(message, code="protocol_error")


def parse_message(message: str | bytes) -> dict[str, Any]:
    """A JSON text frame as a dict."""
    try:
        data = json.loads(message)
    except ValueError as error:
        raise protocol_error(f"the server sent a text frame that is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise protocol_error(f"the server sent JSON that is not an object: {message!r}")
    return data


def ws_error(data: Mapping[str, Any]) -> ClientError:
    return ClientError(
        str(data.get("message") or "the server reported an error"),
        code=data.get("code"),
        param=data.get("param"),
    )


def speech_body(
    input: str,
    *,
    voice: str | None,
    model: str | None,
    response_format: str,
    speed: float,
    sample_rate: int | None,
    language: str | None,
    instructions: str | None,
    normalize: bool,
    stream: bool,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/audio/speech``."""
    return without_none(
        input=input,
        voice=voice,
        model=model,
        response_format=response_format,
        speed=speed,
        sample_rate=sample_rate,
        language=language,
        instructions=instructions,
        normalize=normalize,
        stream=stream,
    )


def message(kind: str, **fields: Any) -> str:
    """A text frame for ``/v1/audio/speech/stream``; None fields are left out."""
    return json.dumps({"type": kind, **without_none(**fields)})


def tts_request(
    text: str,
    *,
    model: str | None,
    speaker: int | None,
    voice: str | None,
    lang: str | None,
    sample_rate: int | None,
) -> str:
    """A ``/ws/tts`` speech request."""
    fields = without_none(
        text=text, speaker=speaker, voice=voice, model=model, lang=lang, sample_rate=sample_rate
    )
    return json.dumps(fields)


INFO_REQUEST = json.dumps({"command": "info"})


class Phase(enum.Enum):
    AWAITING_START = "audio_stream_start"
    STREAMING = "audio, segment or audio_stream_stop"
    STOPPED = "nothing (the utterance is over)"


class UtteranceReader:
    """Reads one utterance's answer on ``/v1/audio/speech/stream``.

    `feed` each frame received; it returns audio to hand on (an AudioChunk for pcm, the frame's
    bytes for other formats) or None, and raises ClientError for an error message.
    """

    def __init__(self) -> None:
        self.phase = Phase.AWAITING_START
        self.sample_rate: int | None = None
        self.format: str | None = None
        self.segments: list[Segment] = []
        self.cancelled = False
        self._odd_byte = b""  # half a 16-bit sample, should a frame ever split one

    @property
    def done(self) -> bool:
        return self.phase is Phase.STOPPED

    def feed(self, frame: str | bytes) -> AudioChunk | bytes | None:
        if isinstance(frame, bytes):
            self._expect(Phase.STREAMING, "a binary frame")
            return self._audio(frame)
        data = parse_message(frame)
        kind = data.get("type")
        if kind == "error":
            raise ws_error(data)
        if kind == "audio_stream_start":
            self._expect(Phase.AWAITING_START, "audio_stream_start")
            self.sample_rate = int(data["sample_rate"])
            self.format = str(data.get("format", "pcm"))
            self.phase = Phase.STREAMING
        elif kind == "segment":
            self._expect(Phase.STREAMING, "segment")
            self.segments.append(
                Segment(
                    index=int(data["index"]),
                    text=str(data["text"]),
                    start_ms=int(data["start_ms"]),
                    end_ms=int(data["end_ms"]),
                )
            )
        elif kind == "audio_stream_stop":
            if self.phase is Phase.STOPPED:
                raise protocol_error("the server sent audio_stream_stop twice")
            self.cancelled = bool(data.get("cancelled", False))
            self.phase = Phase.STOPPED
        # Other types are newer than this client: ignore them.
        return None

    def _expect(self, phase: Phase, received: str) -> None:
        if self.phase is not phase:
            raise protocol_error(f"expected {self.phase.value} from the server, got {received}")

    def _audio(self, frame: bytes) -> AudioChunk | bytes | None:
        if self.format != "pcm":
            return frame or None
        data = self._odd_byte + frame
        whole = len(data) - len(data) % 2
        self._odd_byte = data[whole:]
        assert self.sample_rate is not None
        return decode_pcm16(data[:whole], self.sample_rate) if whole else None


def read_status(frame: str | bytes) -> dict[str, Any] | None:
    """A ``/ws/tts`` status frame: the success answer, None while loading; raises for an error."""
    if isinstance(frame, bytes):
        raise protocol_error("expected a status message from the server, got a binary frame")
    data = parse_message(frame)
    status = data.get("status")
    if status == "loading":
        return None
    if status == "error":
        raise ws_error(data)
    if status != "success":
        raise protocol_error(f"unexpected status message from the server: {frame!r}")
    return data


class WavReader:
    """Collects the binary frames of a ``/ws/tts`` answer up to the announced length."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        try:
            self.length = int(status["length_bytes"])
        except (KeyError, TypeError, ValueError) as error:
            raise protocol_error(f"the success message has no length_bytes: {status}") from error
        self.parts: list[bytes] = []
        self.received = 0

    @property
    def done(self) -> bool:
        return self.received >= self.length

    def feed(self, frame: str | bytes) -> None:
        if not isinstance(frame, bytes):
            raise protocol_error(
                f"expected audio from the server ({self.length - self.received} bytes to come), "
                f"got a text frame: {frame[:200]!r}"
            )
        self.received += len(frame)
        if self.received > self.length:
            raise protocol_error(
                f"the server sent {self.received} bytes of audio, more than the {self.length} "
                "it announced"
            )
        self.parts.append(frame)


def write_atomically(path: str | os.PathLike[str], parts: list[bytes]) -> Path:
    """Write a file that appears complete or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".part"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.writelines(parts)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
