"""What the client sends and how it reads the answers, the same for the sync and async clients.

Nothing here does I/O: the clients move bytes, these functions and readers give them meaning.
"""

from __future__ import annotations

import enum
import json
import mimetypes
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ValidationError
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voxserve.audio import format_for_path
from voxserve.audio.decode import decode_pcm16
from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.audio.wav import fix_wav_header
from voxserve.errors import invalid_fields
from voxserve.request import DialogueRequest, DialogueTurn, SpeechRequest
from voxserve.voices.profile import UPDATABLE_FIELDS

DEFAULT_BASE_URL = "http://127.0.0.1:8880"
DEFAULT_TIMEOUT = 60.0
SPEECH_PATH = "/v1/audio/speech"
SPEECH_STREAM_PATH = "/v1/audio/speech/stream"
DIALOGUE_PATH = "/v1/audio/dialogue"
VOICES_PATH = "/v1/audio/voices"
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
        client's: ``invalid_request`` (refused by the server's own request model before being
        sent), ``connection_error``, ``connection_closed``, ``timeout``, ``protocol_error``."""
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


ModelT = TypeVar("ModelT", bound=BaseModel)
METHOD_FIELDS = frozenset({"stream"})
"""Request fields a client method decides (speech: whole, stream_speech: streamed)."""


def validated(
    model: type[ModelT], given: BaseModel | Mapping[str, Any], fields: Mapping[str, Any]
) -> ModelT:
    """`given` (a request model, or its fields) with the keyword `fields` over it, checked by the
    server's own model: a bad value fails here, before anything is sent, as a ClientError with
    the message and ``param`` the server would answer. A keyword given as None is left out (the
    server's default); one that is no field of the model is a TypeError, never ignored."""
    fields = without_none(**fields)
    unknown = sorted(fields.keys() - model.model_fields.keys() | fields.keys() & METHOD_FIELDS)
    if unknown:
        raise TypeError(f"not a field of {model.__name__} here: {', '.join(unknown)}")
    base = given.model_dump(exclude_unset=True) if isinstance(given, BaseModel) else dict(given)
    try:
        return model.model_validate({**base, **fields})
    except ValidationError as error:
        told = invalid_fields(error.errors())
        raise ClientError(told.message, code="invalid_request", param=told.param) from error


def body(request: BaseModel) -> dict[str, Any]:
    """A request's JSON: the fields it was given, so that the server's defaults fill the rest."""
    return request.model_dump(mode="json", exclude_unset=True)


Clip = bytes | str | os.PathLike[str]
"""Audio to upload: its bytes, or the path of a file (WAV, MP3, FLAC...)."""
Upload = tuple[str, bytes, str]
"""A file of a multipart form as httpx takes it: name, bytes, content type."""


def upload(clip: Clip) -> Upload:
    """A clip as a form's file; a path is read here (blocking: the async client calls it in a
    thread)."""
    if isinstance(clip, bytes):
        return "clip", clip, "application/octet-stream"
    path = Path(clip)
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, path.read_bytes(), kind


def form_text(value: Any) -> str:
    """A JSON value as a form field, written as the server reads it back (true, 1.5, ["a"])."""
    return value if isinstance(value, str) else json.dumps(value)


def speech_content(
    request: SpeechRequest, *, stream: bool, clip: Upload | None, reference_text: str | None
) -> dict[str, Any]:
    """httpx's content arguments for ``POST /v1/audio/speech``: the request as JSON; with a clip
    to clone, the same fields as a multipart form whose ``voice`` is the clip."""
    fields = {**body(request), "stream": stream}
    if clip is None:
        if reference_text is not None:
            raise ValueError("reference_text is what a clip says: give it with clip")
        return {"json": fields}
    if fields.pop("voice", None) is not None:
        raise ValueError("the clip is the voice: give voice or clip, not both")
    if "sampling" in fields:
        raise ValueError(
            "sampling cannot go with a clip: the server's speech form has flat fields only "
            "(a voice profile of the clip can carry sampling defaults)"
        )
    form = {key: form_text(value) for key, value in fields.items() if value is not None}
    if reference_text is not None:
        form["reference_text"] = reference_text
    return {"data": form, "files": {"voice": clip}}


Turns = DialogueRequest | Sequence[DialogueTurn | Mapping[str, Any]]
"""A dialogue: a whole DialogueRequest, or its turns (DialogueTurn, or its fields: ``speaker``,
``text``, ``voice``)."""


def dialogue_request(turns: Turns, fields: Mapping[str, Any]) -> DialogueRequest:
    given = turns if isinstance(turns, DialogueRequest) else {"turns": turns}
    return validated(DialogueRequest, given, fields)


def whole_file(audio: bytes, request: DialogueRequest) -> bytes:
    """A streamed answer as a file: a WAV with its sizes filled in, which a stream cannot know
    (Python's `wave` and some players need them)."""
    if request.response_format == "wav" and request.stream_format == "audio":
        return fix_wav_header(audio)
    return audio


def file_format(path: str | os.PathLike[str], fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` with the format the file's extension names, when it names one (as `voxserve say`
    and `voxserve.api` take it)."""
    audio_format = format_for_path(path)
    return {**fields, "response_format": audio_format} if audio_format else dict(fields)


def voice_path(voice_id: str, *rest: str) -> str:
    return "/".join([VOICES_PATH, quote(voice_id, safe=""), *rest])


def voice_content(fields: Mapping[str, Any], audio: Upload | None) -> dict[str, Any]:
    """httpx's content arguments for creating or updating a voice profile: the fields as JSON;
    with audio, a multipart form of them whose ``audio_sample`` (OpenAI's name) is the clip."""
    unknown = sorted(fields.keys() - UPDATABLE_FIELDS - {"name"})
    if unknown:
        raise TypeError(f"not a field of a voice profile: {', '.join(unknown)}")
    if audio is None:
        return {"json": dict(fields)}
    if None in fields.values():
        raise ValueError("a form cannot clear a field (None): update the profile without audio")
    form = {key: form_text(value) for key, value in fields.items()}
    return {"data": form, "files": {"audio_sample": audio}}


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
    STREAMING = "audio, words, segment or audio_stream_stop"
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
        self.words: list[WordTiming] = []
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
        elif kind == "words":
            self._expect(Phase.STREAMING, "words")
            self.words += [
                WordTiming(str(word["word"]), float(word["start"]), float(word["end"]))
                for word in data["words"]
            ]
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
