"""Sesame CSM-1B on transformers' native port: the engine (``engine``) and its parts: settings,
prompts, generation, loading, and randomly initialised checkpoints for tests and benchmarks.
Importing this needs neither torch nor transformers."""

from voxserve.engines.csm.engine import CsmEngine

__all__ = ["CsmEngine"]
