"""What the ONNX Runtime engines (Piper, Kokoro) share: their sessions' tuning and the installed
version of the library an engine builds on."""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any


def session_options(onnxruntime: Any, threads: int, *, spinning: bool = True) -> Any:
    """Tuned on a 2-core machine (bench/core.py compares it with the library defaults): explicit
    threads, full graph optimization, and no memory-pattern planning, which only helps fixed
    input shapes while a TTS model's input length changes every sentence. ``spinning`` off:
    threads sleep between runs rather than take the cores from the server's other work."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


@functools.cache
def package_version(distribution: str) -> tuple[int, ...]:
    """(major, minor) of an installed distribution; () when it is not installed."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ()
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
