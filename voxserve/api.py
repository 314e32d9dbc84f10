"""The in-process library API: a request in, audio out. The server and the CLI are built on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from voxserve.audio import AUDIO_FORMATS, fix_wav_header
from voxserve.audio.frames import AudioChunk
from voxserve.config import load_settings
from voxserve.errors import InvalidRequestError
from voxserve.request import SpeechRequest
from voxserve.synthesis.synthesizer import PreparedSpeech, ProgressCallback, Synthesizer

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
    audio_format = format_for_path(path)
    if audio_format is None and path.suffix:
        raise InvalidRequestError(
            f"cannot tell the audio format from {path.name!r}; use one of "
            f"{', '.join('.' + name for name in AUDIO_FORMATS)}",
            param="output",
        )
    if audio_format:
        request = request.model_copy(update={"response_format": audio_format})
    synthesizer = synthesizer or default_synthesizer()
    prepared = synthesizer.prepare(request)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".part"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            asyncio.run(_write_stream(synthesizer, prepared, file, progress))
        if request.response_format == "wav":
            Path(temporary).write_bytes(fix_wav_header(Path(temporary).read_bytes()))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


async def _write_stream(
    synthesizer: Synthesizer,
    prepared: PreparedSpeech,
    file: BinaryIO,
    progress: ProgressCallback | None,
) -> None:
    async for data in synthesizer.stream_encoded(prepared, progress):
        file.write(data)
