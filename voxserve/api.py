"""The in-process library API: a request in, audio out. The server and the CLI are built on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from voxserve.audio import AUDIO_FORMATS, fix_wav_header
from voxserve.audio.frames import AudioChunk
from voxserve.config import load_settings
from voxserve.errors import InvalidRequestError
from voxserve.request import SpeechOptions, SpeechRequest
from voxserve.synthesis.dialogue import (
    DialogueRequest,
    TurnTiming,
    prepare_dialogue,
    render_dialogue,
)
from voxserve.synthesis.synthesizer import ProgressCallback, Synthesizer, encode_chunks

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


def format_for_path(path: str | os.PathLike) -> str | None:
    """The audio format a file name asks for, if its extension names one."""
    extension = Path(path).suffix.lower().lstrip(".")
    extension = {"ogg": "opus", "m4a": "aac", "raw": "pcm"}.get(extension, extension)
    return extension if extension in AUDIO_FORMATS else None


def synthesize_to_file(
    request: SpeechRequest | str,
    path: str | os.PathLike,
    *,
    synthesizer: Synthesizer | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Blocking: speak a request into a file, its format taken from the extension when it names one.

    The file is written atomically: it appears complete or not at all.
    """
    if isinstance(request, str):
        request = SpeechRequest(input=request)
    path = Path(path)
    request = request.model_copy(update={"response_format": output_format(path, request)})
    synthesizer = synthesizer or default_synthesizer()
    prepared = synthesizer.prepare(request)
    write_atomically(
        path, request.response_format, lambda: synthesizer.stream_encoded(prepared, progress)
    )
    return path


def dialogue_to_file(
    request: DialogueRequest,
    path: str | os.PathLike,
    *,
    synthesizer: Synthesizer | None = None,
    progress: ProgressCallback | None = None,
) -> list[TurnTiming]:
    """Blocking: render a dialogue into a file (atomically); returns where each turn sits."""
    path = Path(path)
    request = request.model_copy(update={"response_format": output_format(path, request)})
    synthesizer = synthesizer or default_synthesizer()
    dialogue = prepare_dialogue(synthesizer, request)
    timings: list[TurnTiming] = []

    async def audio() -> AsyncIterator[AudioChunk]:
        async for item in render_dialogue(synthesizer, dialogue, progress):
            if isinstance(item, TurnTiming):
                timings.append(item)
            else:
                yield item

    write_atomically(
        path, request.response_format,
        lambda: encode_chunks(audio(), request.response_format, dialogue.sample_rate),
    )  # fmt: skip
    return timings


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


def write_atomically(
    path: Path, audio_format: str, encoded: Callable[[], AsyncIterator[bytes]]
) -> None:
    """Stream encoded audio into ``path`` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".part"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            asyncio.run(_drain(encoded(), file))
        if audio_format == "wav":
            Path(temporary).write_bytes(fix_wav_header(Path(temporary).read_bytes()))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


async def _drain(encoded: AsyncIterator[bytes], file: BinaryIO) -> None:
    async for data in encoded:
        file.write(data)
