"""Chatterbox (Resemble AI) on ``chatterbox-tts``: the engine (``engine``) and its parts: settings,
loading, token generation, streaming decode, the streamed watermark, candidates checked by
Whisper, what its import needs (``compat``, ``torchaudio_parts``), and a random checkpoint for
tests. Importing this needs neither torch nor chatterbox."""

from voxserve.engines.chatterbox.engine import ChatterboxEngine

__all__ = ["ChatterboxEngine"]
