"""Memory that native code (ONNX Runtime, NumPy, FFmpeg) frees, given back to the system: glibc
keeps what is freed for reuse, and a server that parsed a model or finished a chapter would
otherwise hold tens of megabytes it no longer uses."""

from __future__ import annotations

import ctypes


def release_freed_memory() -> None:
    """Give back the free memory of every malloc arena (``malloc_trim``); nothing off glibc."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
