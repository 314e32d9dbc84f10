"""Higgs Audio V2 on transformers' native port: the engine (``engine``) and its parts: settings,
prompts, generation, streaming decode, context carry-over, loading, the torchaudio stand-in, and
randomly-initialised models for tests and benchmarks. Importing this needs neither torch nor
transformers."""

from voxserve.engines.higgs.engine import HiggsEngine

__all__ = ["HiggsEngine"]
