"""The Higgs Audio V2 engine's settings: ``[engines.higgs]``.

Like every engine's table, it is read by ``config.py`` (TOML, then ``VOXSERVE_ENGINES__HIGGS__KEY``
variables) and checked when the configuration loads: a misspelt key or a bad value is an error
naming it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from voxserve.engines.base import BlockingSettings


class HiggsSettings(BlockingSettings):
    """``[engines.higgs]``."""

    # Paths and names pasted with a stray space still find their directory.
    model_config = ConfigDict(str_strip_whitespace=True)

    model_path: str = Field("bosonai/higgs-audio-v2-generation-3B-base", min_length=1)
    """A local directory, or a Hugging Face Hub id (used only when online or already cached)."""
    audio_tokenizer_path: str = Field("bosonai/higgs-audio-v2-tokenizer", min_length=1)
    allow_downloads: bool = False
    """Fetch a Hub id that is not in the Hugging Face cache. The top-level ``allow_downloads``
    turns it on when this table exists or higgs is the default engine; never a request."""
    device: str = "auto"
    """auto (CUDA when there is one), cpu, cuda or cuda:N."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """auto (bfloat16 on CUDA, float32 on CPU), float32, float16 or bfloat16."""
    flash_attention: bool = False
    """FlashAttention 2 (needs CUDA and the flash-attn package); off: PyTorch's SDPA."""
    max_new_tokens: int = Field(2048, ge=1)
    """Longest generation, in steps of 40 ms; shorter texts get a proportionally smaller cap."""
    temperature: float = Field(0.3, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(50, ge=0)
    ras_window: int = Field(7, ge=0)
    """Repetition-aware sampling window in steps (0: off); see ras_max_repeat."""
    ras_max_repeat: int = Field(2, ge=1)
    """A code seen this often within the window is resampled without temperature."""
    seed: int | None = None
    """Fixed seed for every request; None: a random one per request, kept across its chunks."""
    scene: str = "Audio is recorded from a quiet room."
    """The scene when a request gives no instructions; empty: none."""
    max_reference_seconds: float = Field(30.0, gt=0)
    context_chunks: int = Field(2, ge=0)
    """Earlier chunks of the same text fed back as examples, so a long text keeps one voice."""
    max_input_chars: int = Field(400, ge=1)
    max_batch: int = Field(0, ge=0)
    """Requests generated together in one batch; 0: 8 on CUDA, 1 on CPU (``HiggsEngine.describe``
    says how CUDA is told without torch)."""
    batch_wait_ms: float = Field(5.0, ge=0)
    """How long the first request of a batch waits for others to join it."""
    first_chunk_frames: int = Field(8, ge=1)
    """Frames (40 ms each) in the first decoded window: small, so that audio starts sooner."""
    chunk_frames: int = Field(25, ge=1)
    decode_context_frames: int = Field(6, ge=0)
    """Frames of left context and of look-ahead around each decoded window."""
    crossfade_ms: float = Field(5.0, ge=0)
    languages: tuple[str, ...] = ("en", "zh")
    """What every Higgs voice speaks."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        return known_device(device)

    @field_validator("languages")
    @classmethod
    def _some_language(cls, languages: tuple[str, ...]) -> tuple[str, ...]:
        languages = tuple(language.strip() for language in languages if language.strip())
        if not languages:
            raise ValueError("languages cannot be empty")
        return languages


def known_device(device: str) -> str:
    """A ``device`` setting checked: auto, cpu, cuda or cuda:N (every engine on torch)."""
    prefix, colon, index = device.partition(":")
    if device in ("auto", "cpu", "cuda") or (prefix == "cuda" and colon and index.isdigit()):
        return device
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")
