# Generated from _async.py by scripts/unasync.py: do not edit. Change _async.py, then run
# `python scripts/unasync.py` (`make unasync`); tests/test_unasync.py checks that they match.
"""The blocking client: httpx for HTTP, websockets' threading client for the WebSocket APIs.

Made from `_async.py`, the client's one source, by scripts/unasync.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, WebSocketException

from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.client._io_sync import (
    ClientConnection,
    TextSource,
    Worker,
    blocking,
    connect,
    recv,
    text_pieces,
)
from voxserve.client._protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    DIALOGUE_PATH,
    INFO_REQUEST,
    MAX_MESSAGE_BYTES,
    POLL_SECONDS,
    SPEECH_PATH,
    SPEECH_STREAM_PATH,
    TTS_PATH,
    VOICES_PATH,
    ClientError,
    Clip,
    Segment,
    Turns,
    UtteranceReader,
    WavReader,
    auth_headers,
    body,
    dialogue_request,
    error_from_http,
    file_format,
    http_failure,
    json_body,
    message,
    read_status,
    speech_content,
    tts_request,
    upload,
    validated,
    voice_content,
    voice_path,
    whole_file,
    without_none,
    write_atomically,
    ws_failure,
    ws_url,
)
from voxserve.request import SpeechOptions, SpeechRequest


class Client:
    """A client for a voxserve server; use it with ``with`` or call `close`.

    Requests take the server's own models (`voxserve.request.SpeechRequest`, `SpeechOptions`,
    `voxserve.synthesis.dialogue.DialogueRequest`) or their fields as keywords, checked here as
    the server checks them: a bad value is a ClientError naming the field before anything is
    sent. A keyword given as None is left out (the server's default).
    """

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
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self._headers,
            timeout=timeout,
        )

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

    # HTTP: speech

    def speech(
        self,
        input: str | SpeechRequest,
        *,
        clip: Clip | None = None,
        reference_text: str | None = None,
        **fields: Any,
    ) -> bytes:
        """The complete audio file for `input` (``POST /v1/audio/speech``).

        `input` is the text or a whole SpeechRequest; `fields` are SpeechRequest's (``voice``,
        ``response_format``, ``speed``, ``sampling``...), over the request's. `clip` (a file's
        path or bytes) is a voice to clone, for an engine that clones; `reference_text` is what
        it says (without it, the server transcribes it). With ``timestamps``, the answer is the
        server's JSON.
        """
        content = self._speech_content(input, fields, clip, reference_text, stream=False)
        response = self._request("POST", SPEECH_PATH, **content)
        return response.content

    def stream_speech(
        self,
        input: str | SpeechRequest,
        *,
        clip: Clip | None = None,
        reference_text: str | None = None,
        **fields: Any,
    ) -> Iterator[bytes]:
        """`speech`'s audio as it is synthesized; the request is made when iteration starts.

        For ``pcm`` the bytes are 16-bit little-endian mono at 24 kHz (OpenAI's), or `sample_rate`.
        """
        content = self._speech_content(input, fields, clip, reference_text, stream=True)
        yield from self._stream("POST", SPEECH_PATH, content)

    def _speech_content(
        self,
        input: str | SpeechRequest,
        fields: Mapping[str, Any],
        clip: Clip | None,
        reference_text: str | None,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        given = {"input": input} if isinstance(input, str) else input
        request = validated(SpeechRequest, given, fields)
        files = None if clip is None else blocking(upload, clip)
        return speech_content(request, stream=stream, clip=files, reference_text=reference_text)

    # HTTP: dialogue

    def dialogue(self, turns: Turns, **fields: Any) -> bytes:
        """The complete audio of a dialogue (``POST /v1/audio/dialogue``), each turn in its
        speaker's voice.

        `turns` is a whole DialogueRequest, or its turns: DialogueTurn or their fields
        (``{"speaker": "Ann", "text": "Hi!"}``); `fields` are DialogueRequest's (``voices``,
        ``pause_between_turns``, ``response_format``...).
        """
        request = dialogue_request(turns, fields)
        response = self._request("POST", DIALOGUE_PATH, json=body(request))
        return whole_file(response.content, request)

    def dialogue_to_file(
        self, turns: Turns, output_path: str | os.PathLike[str], **fields: Any
    ) -> Path:
        """`dialogue` into a file, written atomically, in the format its extension names (else
        ``response_format``); returns its path."""
        audio = self.dialogue(turns, **file_format(output_path, fields))
        return blocking(write_atomically, output_path, [audio])

    # HTTP: voices

    def voices(self, tag: str | None = None) -> dict[str, Any]:
        """``GET /v1/audio/voices``: voices (built-in and profiles; only profiles with `tag`,
        when given) and the aliases pointing at them."""
        params = without_none(tag=tag)
        return json_body(self._request("GET", VOICES_PATH, params=params))

    def voice(self, voice_id: str) -> dict[str, Any]:
        """One voice: a profile's fields, or a built-in voice's."""
        return json_body(self._request("GET", voice_path(voice_id)))

    def create_voice(
        self, name: str, *, audio: Clip | None = None, **fields: Any
    ) -> dict[str, Any]:
        """A new voice profile, `name` its id. `audio` (a file's path or bytes) is a clip to clone;
        without ``transcript`` the server transcribes it. `fields` are a profile's
        (``display_name``, ``description``, ``tags``, ``language``, ``engine``, ``voice``,
        ``transcript``, ``speaker_description``, ``scene_prompt``, ``defaults``)."""
        files = None if audio is None else blocking(upload, audio)
        content = voice_content({"name": name, **without_none(**fields)}, files)
        return json_body(self._request("POST", VOICES_PATH, **content))

    def update_voice(
        self, voice_id: str, *, audio: Clip | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Change a profile's `fields` (None clears one) or its `audio`; returns the profile."""
        files = None if audio is None else blocking(upload, audio)
        content = voice_content(fields, files)
        return json_body(self._request("PATCH", voice_path(voice_id), **content))

    def delete_voice(self, voice_id: str) -> dict[str, Any]:
        return json_body(self._request("DELETE", voice_path(voice_id)))

    def voice_sample(self, voice_id: str) -> bytes:
        """A WAV of the voice: a profile's reference clip, else a sentence spoken in it."""
        response = self._request("GET", voice_path(voice_id, "sample"))
        return response.content

    # HTTP: the server

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: engines, installed or not, and their capabilities."""
        return json_body(self._request("GET", "/v1/models"))

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return json_body(self._request("GET", "/health"))

    def _request(self, method: str, path: str, **content: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **content)
        except httpx.HTTPError as error:
            raise http_failure(error) from error
        if response.is_error:
            raise error_from_http(response.status_code, response.headers, response.content)
        return response

    def _stream(
        self,
        method: str,
        path: str,
        content: Mapping[str, Any],
    ) -> Iterator[bytes]:
        try:
            with self._http.stream(method, path, **content) as response:
                if response.is_error:
                    response.read()
                    raise error_from_http(response.status_code, response.headers, response.content)
                yield from response.iter_bytes()
        except httpx.HTTPError as error:
            raise http_failure(error) from error

    # WebSocket: text in, audio out

    def speak_stream(
        self, text_pieces: TextSource, options: SpeechOptions | None = None, **fields: Any
    ) -> SpeechStream:
        """Speak text while it is still being written (``/v1/audio/speech/stream``).

        `text_pieces` (tokens, words, a whole string) are sent while audio comes back, so the
        first sentence is heard before the last is written. `options` and `fields` are
        SpeechOptions' (``response_format`` is ``pcm`` unless they say otherwise). Iterate the
        result with ``for`` for AudioChunks (``pcm``) or the encoded bytes (other formats);
        one connection per call.
        """
        given = {} if options is None else options
        start = message("start", **body(validated(SpeechOptions, given, fields)))
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
        return blocking(write_atomically, output_path, wav.parts)

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
            return recv(ws, self.timeout)
        except (OSError, WebSocketException) as error:
            raise ws_failure(error) from error

    @staticmethod
    def _send(ws: ClientConnection, text: str) -> None:
        try:
            ws.send(text)
        except (OSError, WebSocketException) as error:
            raise ws_failure(error) from error


class SpeechStream:
    """The audio of an `Client.speak_stream` call: ``for`` it once; `close` stops it.

    `segments` fills as the server reports each spoken segment, and `words` as it tells when
    each word is heard (engines that time their words); `sample_rate` and `format` are known once
    the first audio has arrived.
    """

    def __init__(self, client: Client, start: str, pieces: TextSource) -> None:
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
    def words(self) -> list[WordTiming]:
        return self._reader.words

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
            failure: list[Exception] = []
            sender = Worker("voxserve-text-sender", _send_text, ws, self._pieces, failure)
            try:
                self._client._send(ws, self._start)
                sender.start()
                with contextlib.closing(self._receive(ws, sender, failure)) as received:
                    yield from received
            finally:
                ws.close()  # first: a sender thread stops at its next send
                sender.stop()

    def _receive(
        self, ws: ClientConnection, sender: Worker, failure: list[Exception]
    ) -> Iterator[AudioChunk | bytes]:
        timeout = self._client.timeout
        quiet = 0.0  # seconds without a word from the server since all text was sent
        while not self._reader.done:
            try:
                frame = recv(ws, POLL_SECONDS)
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


def _send_text(ws: ClientConnection, pieces: TextSource, failure: list[Exception]) -> None:
    """Send the text pieces, then ``end``. Should the caller's pieces fail, keep the error in
    `failure` and close the socket, which wakes the receiver to raise it."""
    try:
        for piece in text_pieces(pieces):
            if not isinstance(piece, str):
                raise TypeError(f"text pieces must be str, not {type(piece).__name__}")
            if piece:
                ws.send(message("text", text=piece))
        ws.send(message("end"))
    except ConnectionClosed:
        pass  # the receiver reports why
    except Exception as error:
        failure.append(error)
        ws.close()
