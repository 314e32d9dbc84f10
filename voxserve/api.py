"""The in-process library API: a request in, audio out. The server and the CLI are built on it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from voxserve.audio import AUDIO_FORMATS, format_for_path
from voxserve.audio.captions import caption_format_for_path, render_captions
from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.audio.music_bed import BedMixer, MusicBed, under_speech
from voxserve.config import load_settings
from voxserve.errors import InvalidRequestError
from voxserve.request import DialogueRequest, SpeechOptions, SpeechRequest
from voxserve.streaming import Words, check_word_timings, encode_chunks, encode_stream, whole_audio
from voxserve.synthesis.cost import EngineEstimate
from voxserve.synthesis.cost import estimate as plan_estimate
from voxserve.synthesis.dialogue import TurnTiming, prepare_dialogue, render_dialogue
from voxserve.synthesis.synthesizer import ProgressCallback, Synthesizer

T = TypeVar("T")
_default_synthesizer: Synthesizer | None = None


def default_synthesizer() -> Synthesizer:
    """A synthesizer built from the configuration files and environment, created on first use."""
    global _default_synthesizer
    if _default_synthesizer is None:
        _default_synthesizer = Synthesizer(load_settings())
    return _default_synthesizer


async def synthesize(
    request: SpeechRequest | str,
    *,
    synthesizer: Synthesizer | None = None,
    progress: ProgressCallback | None = None,
) -> AsyncIterator[AudioChunk]:
    """Speak a request (or plain text with the default voice), yielding audio as it is made."""
    if isinstance(request, str):
        request = SpeechRequest(input=request)
    synthesizer = synthesizer or default_synthesizer()
    async with contextlib.aclosing(synthesizer.stream(request, progress)) as chunks:
        async for chunk in chunks:
            yield chunk


def estimate(
    request: SpeechRequest | str, *, synthesizer: Synthesizer | None = None
) -> EngineEstimate:
    """Blocking (planning): what speaking a request would cost, planned as it would be spoken;
    nothing is synthesized. ``cost`` is None on a free engine."""
    if isinstance(request, str):
        request = SpeechRequest(input=request)
    prepared = (synthesizer or default_synthesizer()).prepare(request)
    shares = plan_estimate(prepared.segments)
    return shares[0] if shares else EngineEstimate(prepared.engine.name, 0, 0, None)


def synthesize_to_file(
    request: SpeechRequest | str,
    path: str | os.PathLike,
    *,
    synthesizer: Synthesizer | None = None,
    progress: ProgressCallback | None = None,
    timestamps: str | os.PathLike | None = None,
    captions: str | os.PathLike | None = None,
) -> Path:
    """Blocking: speak a request into a file, its format taken from the extension when it names one.

    The file is written atomically: it appears complete or not at all. Callable from code that
    runs an event loop too (a notebook, an async app), though that loop waits meanwhile; there,
    ``await synthesize_to_file_async(...)`` instead. ``timestamps``: a second file, written
    after the audio, with when each word is spoken (JSON: ``[{"word", "start", "end"}]`` in
    seconds). ``captions``: a captions file of the words, its format from its extension
    (``.srt``, ``.vtt``, ``.json``: `voxserve.audio.captions`). An engine that times no words has
    them aligned to its audio; refused only where they cannot be.
    """
    return run_blocking(
        synthesize_to_file_async(
            request,
            path,
            synthesizer=synthesizer,
            progress=progress,
            timestamps=timestamps,
            captions=captions,
        )
    )


async def synthesize_to_file_async(
    request: SpeechRequest | str,
    path: str | os.PathLike,
    *,
    synthesizer: Synthesizer | None = None,
    progress: ProgressCallback | None = None,
    timestamps: str | os.PathLike | None = None,
    captions: str | os.PathLike | None = None,
) -> Path:
    """``synthesize_to_file`` for async code: the event loop goes on while the file is written."""
    if isinstance(request, str):
        request = SpeechRequest(input=request)
    path = Path(path)
    caption_format = caption_format_for_path(captions) if captions is not None else None
    wants_words = timestamps is not None or captions is not None
    update = {"response_format": output_format(path, request), "timestamps": wants_words}
    request = request.model_copy(update=update)
    synthesizer = synthesizer or default_synthesizer()
    prepared = await asyncio.to_thread(synthesizer.prepare, request)  # resolution, normalizing
    if wants_words:
        check_word_timings([prepared.voicing], synthesizer.aligner)
    chunks = synthesizer.stream(prepared, progress)
    pieces = encode_stream(chunks, request.response_format, prepared.sample_rate)
    words: list[WordTiming] = []
    await write_atomically(path, request.response_format, _audio_noting_words(pieces, words))
    if timestamps is not None:
        listing = json.dumps([word.to_dict() for word in words], indent=2).encode()
        await write_atomically(Path(timestamps), "json", _one(listing))
    if caption_format is not None:
        text = render_captions(words, caption_format).encode()
        await write_atomically(Path(captions), caption_format, _one(text))
    return path


async def _audio_noting_words(
    pieces: AsyncIterator[bytes | Words], words: list[WordTiming]
) -> AsyncIterator[bytes]:
    """The audio of ``pieces``, their words added to ``words`` on the way."""
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            if isinstance(piece, Words):
                words.extend(piece.words)
            else:
                yield piece


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def dialogue_to_file(
    request: DialogueRequest,
    path: str | os.PathLike,
    *,
    synthesizer: Synthesizer | None = None,
    progress: ProgressCallback | None = None,
    music: tuple[bytes, MusicBed] | None = None,
) -> list[TurnTiming]:
    """Blocking: render a dialogue into a file (atomically); returns where each turn sits.
    ``music``: a music file (any format FFmpeg reads) and how its bed sits under the turns."""
    return run_blocking(dialogue_to_file_async(
        request, path, synthesizer=synthesizer, progress=progress, music=music
    ))  # fmt: skip


async def dialogue_to_file_async(
    request: DialogueRequest,
    path: str | os.PathLike,
    *,
    synthesizer: Synthesizer | None = None,
    progress: ProgressCallback | None = None,
    music: tuple[bytes, MusicBed] | None = None,
) -> list[TurnTiming]:
    """``dialogue_to_file`` for async code."""
    path = Path(path)
    request = request.model_copy(update={"response_format": output_format(path, request)})
    synthesizer = synthesizer or default_synthesizer()
    dialogue = prepare_dialogue(synthesizer, request)
    timings: list[TurnTiming] = []
    rendered = render_dialogue(synthesizer, dialogue, progress)
    if music is not None:
        rendered = under_speech(rendered, BedMixer(*music, dialogue.sample_rate))

    async def audio() -> AsyncIterator[AudioChunk]:
        async for item in rendered:
            if isinstance(item, TurnTiming):
                timings.append(item)
            else:
                yield item

    await write_atomically(
        path, request.response_format,
        encode_chunks(audio(), request.response_format, dialogue.sample_rate),
    )  # fmt: skip
    return timings


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end and return its result, from any code.

    ``asyncio.run`` cannot start a loop in a thread that already runs one, so there the coroutine
    runs in a worker thread with its own loop while the caller waits.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="voxserve-run") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def output_format(path: Path, request: SpeechOptions) -> str:
    """The format the file's extension names, else the request's."""
    audio_format = format_for_path(path)
    if audio_format is None and path.suffix:
        raise InvalidRequestError(
            f"cannot tell the audio format from {path.name!r}; use one of "
            f"{', '.join('.' + name for name in AUDIO_FORMATS)}",
            param="output",
        )
    return audio_format or request.response_format


async def write_atomically(path: Path, file_format: str, encoded: AsyncIterator[bytes]) -> None:
    """Stream encoded audio (or any file of ``file_format``) into ``path`` through a temporary
    file renamed into place; the file work runs in threads, so the event loop never waits on the
    disk."""
    temporary, file = await asyncio.to_thread(_open_temporary, path)
    try:
        with file:
            async with contextlib.aclosing(encoded):
                async for data in encoded:
                    await asyncio.to_thread(file.write, data)
        await asyncio.to_thread(_put_in_place, temporary, path, file_format)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _open_temporary(path: Path) -> tuple[Path, BinaryIO]:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".part"
    )
    return Path(temporary), os.fdopen(descriptor, "wb")


def _put_in_place(temporary: Path, path: Path, file_format: str) -> None:
    if file_format == "wav":  # the sizes in its header are known only now
        temporary.write_bytes(whole_audio(file_format, temporary.read_bytes()))
    os.replace(temporary, path)
