"""The asyncio client: httpx for HTTP, websockets' asyncio client for the WebSocket APIs."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

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


class AsyncClient:
    """An asyncio client for a voxserve server; use it with ``async with`` or call `aclose`."""

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
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # HTTP

    async def speech(
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
        return (await self._request("POST", SPEECH_PATH, json=body)).content

    async def stream_speech(
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
    ) -> AsyncIterator[bytes]:
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
            async with self._http.stream("POST", SPEECH_PATH, json=body) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from_http(response.status_code, response.headers, response.content)
                async for data in response.aiter_bytes():
                    yield data
        except httpx.HTTPError as error:
            raise http_failure(error) from error

    async def models(self) -> dict[str, Any]:
        """``GET /v1/models``: engines, installed or not, and their capabilities."""
        return json_body(await self._request("GET", "/v1/models"))

    async def voices(self) -> dict[str, Any]:
        """``GET /v1/audio/voices``: voices and the aliases pointing at them."""
        return json_body(await self._request("GET", "/v1/audio/voices"))

    async def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return json_body(await self._request("GET", "/health"))

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise http_failure(error) from error
        if response.is_error:
            raise error_from_http(response.status_code, response.headers, response.content)
        return response

    # WebSocket: text in, audio out

    def speak_stream(
        self,
        text_pieces: Iterable[str] | AsyncIterable[str],
        *,
        voice: str | None = None,
        model: str | None = None,
        response_format: str = "pcm",
        sample_rate: int | None = None,
        speed: float | None = None,
        language: str | None = None,
        normalize: bool | None = None,
    ) -> AsyncSpeechStream:
        """Speak text while it is still being written (``/v1/audio/speech/stream``).

        `text_pieces` (tokens, words, a whole string) are sent by a task while audio comes back,
        so the first sentence is heard before the last is written; a plain iterable is read on
        the event loop, so it must not block. Iterate the result with
        ``async for`` for AudioChunks (``pcm``) or the encoded bytes (other formats); one
        connection per call.
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
        return AsyncSpeechStream(self, start, pieces)

    # WebSocket: the TTS-provider protocol

    async def get_server_info(self) -> dict[str, Any]:
        """``/ws/tts``'s ``info``: models, languages and the speaker table."""
        ws = await self._connect(TTS_PATH)
        try:
            await self._send(ws, INFO_REQUEST)
            return await self._await_status(ws)
        finally:
            await ws.close()

    async def generate_speech(
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
        ws = await self._connect(TTS_PATH)
        try:
            await self._send(ws, request)
            wav = WavReader(await self._await_status(ws))
            while not wav.done:
                wav.feed(await self._recv(ws))
        finally:
            await ws.close()
        return await asyncio.to_thread(write_atomically, output_path, wav.parts)

    async def _await_status(self, ws: ClientConnection) -> dict[str, Any]:
        while True:
            status = read_status(await self._recv(ws))
            if status is not None:
                return status

    async def _connect(self, path: str) -> ClientConnection:
        try:
            return await connect(
                ws_url(self.base_url, path),
                additional_headers=self._headers,
                open_timeout=self.timeout,
                max_size=MAX_MESSAGE_BYTES,
            )
        except (OSError, WebSocketException) as error:
            raise ws_failure(error) from error

    async def _recv(self, ws: ClientConnection) -> str | bytes:
        try:
            async with asyncio.timeout(self.timeout):
                return await ws.recv()
        except (OSError, WebSocketException) as error:
            raise ws_failure(error) from error

    @staticmethod
    async def _send(ws: ClientConnection, text: str) -> None:
        try:
            await ws.send(text)
        except (OSError, WebSocketException) as error:
            raise ws_failure(error) from error


class AsyncSpeechStream:
    """The audio of an `AsyncClient.speak_stream` call: ``async for`` it once; `aclose` stops it.

    `segments` fills as the server reports each spoken segment; `sample_rate` and `format` are
    known once the first audio has arrived.
    """

    def __init__(
        self, client: AsyncClient, start: str, pieces: Iterable[str] | AsyncIterable[str]
    ) -> None:
        self._client = client
        self._start = start
        self._pieces = pieces
        self._reader = UtteranceReader()
        self._audio: AsyncIterator[AudioChunk | bytes] | None = None
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

    def __aiter__(self) -> AsyncSpeechStream:
        return self

    async def __anext__(self) -> AudioChunk | bytes:
        if self._closed:
            raise StopAsyncIteration
        if self._audio is None:
            self._audio = self._run()
        return await anext(self._audio)

    async def aclose(self) -> None:
        """Stop: the connection closes, and with it the synthesis."""
        self._closed = True
        if self._audio is not None:
            await self._audio.aclose()

    async def __aenter__(self) -> AsyncSpeechStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncIterator[AudioChunk | bytes]:
        ws = await self._client._connect(SPEECH_STREAM_PATH)
        failure: list[Exception] = []
        sender: asyncio.Task[None] | None = None
        try:
            await self._client._send(ws, self._start)
            sender = asyncio.create_task(_send_text(ws, self._pieces, failure))
            async with contextlib.aclosing(self._receive(ws, sender, failure)) as received:
                async for audio in received:
                    yield audio
        finally:
            if sender is not None:
                sender.cancel()
                await asyncio.wait([sender])  # unlike awaiting it, never raises our cancellation
            await ws.close()

    async def _receive(
        self, ws: ClientConnection, sender: asyncio.Task[None], failure: list[Exception]
    ) -> AsyncIterator[AudioChunk | bytes]:
        timeout = self._client.timeout
        quiet = 0.0  # seconds without a word from the server since all text was sent
        while not self._reader.done:
            try:
                async with asyncio.timeout(POLL_SECONDS):
                    frame = await ws.recv()
            except TimeoutError:
                if timeout is not None and sender.done():
                    quiet += POLL_SECONDS
                    if quiet >= timeout:
                        raise ClientError(
                            f"no answer from the server within {timeout} s", code="timeout"
                        ) from None
                continue
            except (OSError, WebSocketException) as error:
                if failure:
                    raise failure[0] from None
                raise ws_failure(error) from error
            quiet = 0.0
            audio = self._reader.feed(frame)
            if audio is not None:
                yield audio


async def _send_text(
    ws: ClientConnection, pieces: Iterable[str] | AsyncIterable[str], failure: list[Exception]
) -> None:
    """Send the text pieces, then ``end``. Should the caller's pieces fail, keep the error in
    `failure` and close the socket, which wakes the receiver to raise it."""
    try:
        if isinstance(pieces, AsyncIterable):
            async for piece in pieces:
                await _send_piece(ws, piece)
        else:
            for piece in pieces:
                await _send_piece(ws, piece)
        await ws.send(message("end"))
    except ConnectionClosed:
        pass  # the receiver reports why
    except Exception as error:
        failure.append(error)
        await ws.close()


async def _send_piece(ws: ClientConnection, piece: str) -> None:
    if not isinstance(piece, str):
        raise TypeError(f"text pieces must be str, not {type(piece).__name__}")
    if piece:
        await ws.send(message("text", text=piece))
