"""The Sesame CSM-1B engine's settings: ``[engines.csm]``.

Read by ``config.py`` like every engine's table (TOML, then ``VOXSERVE_ENGINES__CSM__KEY``
variables) and checked when the configuration loads: a misspelt key or a bad value is an error
naming it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from voxserve.engines.base import BlockingSettings
from voxserve.engines.higgs.settings import known_device


class CsmSettings(BlockingSettings):
    """``[engines.csm]``."""

    # Paths and names pasted with a stray space still find their directory.
    model_config = ConfigDict(str_strip_whitespace=True)

    model_path: str = Field("sesame/csm-1b", min_length=1)
    """A local directory holding the checkpoint (model, Mimi codec, tokenizer, chat template), or
    a Hugging Face Hub id, used only when already cached or with ``allow_downloads`` (the Hub
    repository is gated: accept its terms first)."""
    allow_downloads: bool = False
    """Fetch a Hub id that is not in the Hugging Face cache. The top-level ``allow_downloads``
    turns it on when this table exists or csm is the default engine; never a request."""
    device: str = "auto"
    """auto (CUDA when there is one), cpu, cuda or cuda:N."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """auto (bfloat16 on CUDA, float32 on CPU); the Mimi codec always runs in float32."""
    max_audio_seconds: float = Field(30.0, gt=0)
    """Longest audio of one segment; shorter texts get a proportionally smaller cap, so that a
    model that never ends its stream stops there."""
    temperature: float = Field(0.9, gt=0)
    """Sesame's own defaults: temperature 0.9, top-k 50, for every codebook."""
    top_k: int = Field(50, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    """Fixed seed for every request; None: a random one per request, kept across its segments."""
    context_turns: int = Field(6, ge=0)
    """Earlier turns of a render (text and audio) fed back to the next one, so a dialogue or a
    long text keeps its voices; 0: none."""
    context_seconds: float = Field(60.0, ge=0)
    """The most audio those turns may hold together; the oldest go first."""
    max_reference_seconds: float = Field(30.0, gt=0)
    """Longest clip to clone from (it is a context turn of its own)."""
    max_input_chars: int = Field(300, ge=1)
    max_batch: int = Field(0, ge=0)
    """Requests generated together in one batch; 0: 8 on CUDA, 1 on CPU."""
    batch_wait_ms: float = Field(5.0, ge=0)
    """How long the first request of a batch waits for others to join it."""
    first_chunk_frames: int = Field(4, ge=1)
    """Frames (80 ms each) in the first decoded window: small, so that audio starts sooner."""
    chunk_frames: int = Field(12, ge=1)
    decode_context_frames: int = Field(12, ge=0)
    """Frames decoded before each window as its left context (Mimi's decoder is causal: it
    needs no look-ahead)."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        return known_device(device)
