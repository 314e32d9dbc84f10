"""What a cloning engine makes of a reference clip (codes, conditionals), kept per file, and the
clip itself, read and checked the same way for every engine."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from voxserve.audio.decode import decode_audio
from voxserve.audio.frames import AudioChunk
from voxserve.errors import InvalidRequestError

T = TypeVar("T")


class PerFileCache(Generic[T]):
    """Values made from files, each once per file version (path, mtime, size): a clip
    replaced under the same name is made again. The ``kept`` most recently used stay."""

    def __init__(self, kept: int = 32):
        self.kept = kept
        self._values: OrderedDict[tuple, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, make: Callable[[str], T]) -> T:
        try:
            status = os.stat(path)
        except OSError as error:
            raise InvalidRequestError(
                f"reference audio {path!r} cannot be read: {error.strerror}", param="voice"
            ) from None
        key = (path, status.st_mtime_ns, status.st_size)
        with self._lock:
            if (value := self._values.get(key)) is not None:
                self._values.move_to_end(key)
                return value
        value = make(path)  # outside the lock: making one (a model pass) must not hold others
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.kept:
                self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


def reference_clip(
    path: str, sample_rate: int, engine: str, longest: float, shortest: float
) -> AudioChunk:
    """The clip at ``path`` as mono audio at ``sample_rate``; a 400 naming ``voice`` for a file
    that is not audio, or a clip longer than ``longest`` (``max_reference_seconds``) or shorter
    than ``shortest`` seconds."""
    try:
        clip = decode_audio(path, sample_rate=sample_rate)
    except (OSError, ValueError) as error:
        raise InvalidRequestError(f"reference audio {path!r}: {error}", param="voice") from None
    if clip.duration > longest:
        raise InvalidRequestError(
            f"reference audio is {clip.duration:.1f} s; {engine} takes at most {longest:g} s "
            "(max_reference_seconds)",
            param="voice",
            code="reference_too_long",
        )
    if clip.duration < shortest:
        raise InvalidRequestError(
            f"reference audio is {clip.duration:.2f} s: too short to clone", param="voice"
        )
    return clip
