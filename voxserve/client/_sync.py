"""The blocking client: httpx for HTTP, websockets' threading client for the WebSocket APIs."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import ClientConnection, connect

from voxserve.audio.frames import AudioChunk
from voxserve.client._protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    INFO_REQUEST,
    MAX_MESSAGE_BYTES,
    POLL_SECONDS,
    SPEECH_PATH,
    SPEECH_STREAM_PATH,
    TTS_PATH,
    ClientError,
    Segment,
    UtteranceReader,
    WavReader,
    auth_headers,
    error_from_http,
    http_failure,
    json_body,
    message,
    read_status,
    speech_body,
    tts_request,
    write_atomically,
    ws_failure,
    ws_url,
)


class Client:
    """A blocking client for a voxserve server; use it as a context manager or call `close`."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        ws_url(base_url, "")  # refuse a URL that is neither http nor https now, not on first use
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        """Seconds to wait for the server to connect or answer; None waits for ever."""
        self._headers = auth_headers(api_key)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # HTTP

    def speech(
        self,
        input: str,
        *,
        voice: str | None = None,
        model: str | None = None,
        response_format: str = "mp3",
        speed: float = 1.0,
        sample_rate: int | None = None,
        language: str | None = None,
        instructions: str | None = None,
        normalize: bool = True,
    ) -> bytes:
        """The complete audio file for `input` (``POST /v1/audio/speech``)."""
        body = speech_body(
            input,
            voice=voice,
            model=model,
            response_format=response_format,
            speed=speed,
            sample_rate=sample_rate,
            language=language,
            instructions=instructions,
            normalize=normalize,
            stream=False,
        )
        return self._request("POST", SPEECH_PATH, json=body).content

    def stream_speech(
        self,
        input: str,
        *,
        voice: str | None = None,
        model: str | None = None,
        response_format: str = "mp3",
        speed: float = 1.0,
        sample_rate: int | None = None,
        language: str | None = None,
        instructions: str | None = None,
        normalize: bool = True,
    ) -> Iterator[bytes]:
        """The audio for `input` as it is synthesized; the request is made when iteration starts.

        For ``pcm`` the bytes are 16-bit little-endian mono at 24 kHz (OpenAI's), or `sample_rate`.
        """
        body = speech_body(
            input,
            voice=voice,
            model=model,
            response_format=response_format,
            speed=speed,
            sample_rate=sample_rate,
            language=language,
            instructions=instructions,
            normalize=normalize,
            stream=True,
        )
        try:
            with self._http.stream("POST", SPEECH_PATH, json=body) as response:
                if response.is_error:
                    response.read()
                    raise error_from_http(response.status_code, response.headers, response.content)
                yield from response.iter_bytes()
        except httpx.HTTPError as error:
            raise http_failure(error) from error

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: engines, installed or not, and their capabilities."""
        return json_body(self._request("GET", "/v1/models"))

    def voices(self) -> dict[str, Any]:
        """``GET /v1/audio/voices``: voices and the aliases pointing at them."""
        return json_body(self._request("GET", "/v1/audio/voices"))

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return json_body(self._request("GET", "/health"))

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise http_failure(error) from error
        if response.is_error:
            raise error_from_http(response.status_code, response.headers, response.content)
        return response

    # WebSocket: text in, audio out

    def speak_stream(
        self,
        text_pieces: Iterable[str],
        *,
        voice: str | None = None,
        model: str | None = None,
        response_format: str = "pcm",
        sample_rate: int | None = None,
        speed: float | None = None,
        language: str | None = None,
        normalize: bool | None = None,
    ) -> SpeechStream:
        """Speak text while it is still being written (``/v1/audio/speech/stream``).

        `text_pieces` (tokens, words, a whole string) are sent from a thread while audio comes
        back, so the first sentence is heard before the last is written. Iterate the result for
        AudioChunks (``pcm``) or the encoded bytes (other formats); one connection per call.
        """
        start = message(
            "start",
            voice=voice,
            model=model,
            response_format=response_format,
            sample_rate=sample_rate,
            speed=speed,
            language=language,
            normalize=normalize,
        )
        pieces = [text_pieces] if isinstance(text_pieces, str) else text_pieces
        return SpeechStream(self, start, pieces)

    # WebSocket: the TTS-provider protocol

    def get_server_info(self) -> dict[str, Any]:
        """``/ws/tts``'s ``info``: models, languages and the speaker table."""
        with self._connect(TTS_PATH) as ws:
            self._send(ws, INFO_REQUEST)
            return self._await_status(ws)

    def generate_speech(
        self,
        text: str,
        output_path: str | os.PathLike[str],
        model: str | None = None,
        speaker: int | None = None,
        lang: str | None = None,
        sample_rate: int | None = None,
        *,
        voice: str | None = None,
    ) -> Path:
        """Speak `text` into a WAV file over ``/ws/tts``, written atomically; returns its path.

        `speaker` is a role id (0-3, then the other voices); `voice` names a voice id instead.
        """
        request = tts_request(
            text, model=model, speaker=speaker, voice=voice, lang=lang, sample_rate=sample_rate
        )
        with self._connect(TTS_PATH) as ws:
            self._send(ws, request)
            wav = WavReader(self._await_status(ws))
            while not wav.done:
                wav.feed(self._recv(ws))
        return write_atomically(output_path, wav.parts)

    def _await_status(self, ws: ClientConnection) -> dict[str, Any]:
        while True:
            status = read_status(self._recv(ws))
            if status is not None:
                return status

    def _connect(self, path: str) -> ClientConnection:
        try:
            return connect(
                ws_url(self.base_url, path),
                additional_headers=self._headers,
                open_timeout=self.timeout,
                max_size=MAX_MESSAGE_BYTES,
            )
        except (OSError, WebSocketException) as error:
            raise ws_failure(error) from error

    def _recv(self, ws: ClientConnection) -> str | bytes:
        try:
            return ws.recv(timeout=self.timeout)
        except (OSError, WebSocketException) as error:
            raise ws_failure(error) from error

    @staticmethod
    def _send(ws: ClientConnection, text: str) -> None:
        try:
            ws.send(text)
        except (OSError, WebSocketException) as error:
            raise ws_failure(error) from error


class SpeechStream:
    """The audio of a `Client.speak_stream` call: iterate it once; `close` it to stop early.

    `segments` fills as the server reports each spoken segment; `sample_rate` and `format` are
    known once the first audio has arrived.
    """

    def __init__(self, client: Client, start: str, pieces: Iterable[str]) -> None:
        self._client = client
        self._start = start
        self._pieces = pieces
        self._reader = UtteranceReader()
        self._audio: Iterator[AudioChunk | bytes] | None = None
        self._closed = False

    @property
    def segments(self) -> list[Segment]:
        return self._reader.segments

    @property
    def sample_rate(self) -> int | None:
        return self._reader.sample_rate

    @property
    def format(self) -> str | None:
        return self._reader.format

    def __iter__(self) -> SpeechStream:
        return self

    def __next__(self) -> AudioChunk | bytes:
        if self._closed:
            raise StopIteration
        if self._audio is None:
            self._audio = self._run()
        return next(self._audio)

    def close(self) -> None:
        """Stop: the connection closes, and with it the synthesis."""
        self._closed = True
        if self._audio is not None:
            self._audio.close()

    def __enter__(self) -> SpeechStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> Iterator[AudioChunk | bytes]:
        with self._client._connect(SPEECH_STREAM_PATH) as ws:
            sender = _TextSender(ws, self._pieces)
            try:
                self._client._send(ws, self._start)
                sender.start()
                yield from self._receive(ws, sender)
            finally:
                ws.close()
                if sender.ident is not None:
                    # One still inside the caller's iterable stops at its next send: don't wait.
                    sender.join(timeout=POLL_SECONDS)

    def _receive(self, ws: ClientConnection, sender: _TextSender) -> Iterator[AudioChunk | bytes]:
        timeout = self._client.timeout
        quiet = 0.0  # seconds without a word from the server since all text was sent
        while not self._reader.done:
            try:
                frame = ws.recv(timeout=POLL_SECONDS)
            except TimeoutError:
                if timeout is not None and not sender.is_alive():
                    quiet += POLL_SECONDS
                    if quiet >= timeout:
                        raise ClientError(
                            f"no answer from the server within {timeout} s", code="timeout"
                        ) from None
                continue
            except (OSError, WebSocketException) as error:
                if sender.failure is not None:
                    raise sender.failure from None
                raise ws_failure(error) from error
            quiet = 0.0
            audio = self._reader.feed(frame)
            if audio is not None:
                yield audio


class _TextSender(threading.Thread):
    """Sends the text pieces, then ``end``, while the caller's thread receives audio."""

    def __init__(self, ws: ClientConnection, pieces: Iterable[str]) -> None:
        super().__init__(name="voxserve-text-sender", daemon=True)
        self._ws = ws
        self._pieces = pieces
        self.failure: Exception | None = None
        """What went wrong reading the caller's pieces; the receiver raises it."""

    def run(self) -> None:
        try:
            for piece in self._pieces:
                if not isinstance(piece, str):
                    raise TypeError(f"text pieces must be str, not {type(piece).__name__}")
                if piece:
                    self._ws.send(message("text", text=piece))
            self._ws.send(message("end"))
        except ConnectionClosed:
            pass  # the receiver reports why
        except Exception as error:
            self.failure = error
            self._ws.close()  # wakes the receiver, which raises the failure
