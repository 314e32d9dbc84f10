"""Reference clips on the server that a request names by path as its ``voice``, confined to the
directories of the ``voice_paths`` setting.

A path that cannot serve is answered the same way whether it is missing, outside those
directories (after symlinks and ``..`` are resolved), unreadable, not a file or not audio: any
difference would tell a client which files exist on the server.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from voxserve.errors import InvalidRequestError


def read_clip(voice: str, directories: Sequence[Path], max_bytes: int) -> bytes:
    """The bytes of the file ``voice`` names, if it lies in one of ``directories`` and holds at
    most ``max_bytes``; checked before anything is read. Blocking."""
    try:
        path = Path(os.path.realpath(Path(voice).expanduser()))
        roots = [Path(os.path.realpath(directory.expanduser())) for directory in directories]
    except (OSError, ValueError) as error:  # a NUL byte, a name too long, an unknown ~user
        raise unusable_clip(voice) from error
    if not any(path.is_relative_to(root) for root in roots):
        raise unusable_clip(voice)
    try:
        # The path as resolved, never a link put in its place since; a FIFO must not block.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        with open(os.open(path, flags), "rb") as file:
            status = os.fstat(file.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise unusable_clip(voice)
            if status.st_size > max_bytes:
                raise clip_too_large(voice, max_bytes)
            data = file.read(max_bytes + 1)  # it may have grown since
    except OSError as error:
        raise unusable_clip(voice) from error
    if len(data) > max_bytes:
        raise clip_too_large(voice, max_bytes)
    return data


def unusable_clip(voice: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"voice {voice!r} is not an audio file this server lets requests use: a path must name "
        "a readable audio clip inside one of the directories of its voice_paths setting",
        param="voice",
        code="invalid_voice_path",
    )


def clip_too_large(voice: str, max_bytes: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"voice {voice!r} is over {max_bytes // 2**20} MB; a reference clip needs a few sentences "
        "of clear speech",
        param="voice",
        code="audio_too_large",
    )
