"""The Chatterbox engine's settings (``[engines.chatterbox]``) and per-request options
(``engine_options``: ``ChatterboxOptions``)."""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator

from voxserve.engines.base import BlockingSettings, EngineOptions
from voxserve.engines.higgs.settings import known_device


class ChatterboxOptions(EngineOptions):
    """``engine_options`` for chatterbox, from a request or a voice profile (the request's win);
    unset: the engine's settings. Bounds as Resemble's demo's sliders."""

    model_config = ConfigDict(allow_inf_nan=False)

    exaggeration: float | None = Field(None, ge=0.25, le=2.0)
    """Emotion intensity: 0.5 neutral, higher more expressive (and faster)."""
    cfg_weight: float | None = Field(None, ge=0.0, le=1.0)
    """Classifier-free guidance: how closely the voice follows the text and the reference's
    pace; 0 turns guidance off (generated without the unconditioned pass)."""
    temperature: float | None = Field(None, gt=0.0, le=5.0)


class ChatterboxSettings(BlockingSettings):
    """``[engines.chatterbox]``."""

    model_config = ConfigDict(str_strip_whitespace=True)

    model_path: str = Field("ResembleAI/chatterbox", min_length=1)
    """A local directory holding ve, t3_cfg and s3gen (.safetensors), tokenizer.json and conds.pt,
    or a Hugging Face Hub id (used only when cached, or fetched with allow_downloads)."""
    allow_downloads: bool = False
    """Fetch a Hub id that is not in the Hugging Face cache; the top-level ``allow_downloads``
    turns it on when this table exists or chatterbox is the default engine; never a request."""
    device: str = "auto"
    """auto (CUDA when there is one), cpu, cuda or cuda:N."""
    exaggeration: float = Field(0.5, ge=0.25, le=2.0)
    cfg_weight: float = Field(0.5, ge=0.0, le=1.0)
    temperature: float = Field(0.8, gt=0.0, le=5.0)
    repetition_penalty: float = Field(1.2, ge=1.0)
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    """Fixed seed for every request; None: a random one per request."""
    max_new_tokens: int = Field(1000, ge=1)
    """Longest generation, in speech tokens of 40 ms; shorter texts get a smaller cap."""
    flow_steps: int = Field(10, ge=1, le=50)
    """Euler steps of S3Gen's flow matching per decode (upstream: 10); fewer is faster, rougher."""
    chunk_tokens: int = Field(25, ge=4)
    """Speech tokens (40 ms each) generated between two decodes of the stream."""
    first_chunk_tokens: int = Field(25, ge=4)
    """Tokens before the first decode: smaller, and audio starts sooner."""
    crossfade_frames: int = Field(8, ge=1, le=25)
    """Mel frames (20 ms each) decoded again at each join and crossfaded with the audio before."""
    watermark: bool = True
    """Resemble's Perth watermark, imperceptible and detectable, on every clip (upstream always
    applies it). It needs the whole clip: with it, a segment's audio comes when it is complete.
    Off: true streaming."""
    max_reference_seconds: float = Field(30.0, gt=0)
    """Longest clip taken to clone (Chatterbox itself hears its first 10 s)."""
    max_input_chars: int = Field(300, ge=1)
    candidates: int = Field(1, ge=1, le=8)
    """Clips generated per segment, each with its own seed, and judged by Whisper: the one whose
    transcript is closest to the text is sent (1: off, and the stream is not held back)."""
    candidate_max_wer: float = Field(0.3, ge=0.0, le=1.0)
    """Word error rate above which no candidate is good enough: the text is tried again in
    shorter pieces (its sentences, then halves), then spoken by ``fallback_engine``."""
    candidate_min_chars: int = Field(40, ge=1)
    """Pieces of text this short are not cut further."""
    whisper_model: str = "base"
    """The Whisper that judges candidates: a bundled model's name (``base``, multilingual and a
    better judge; ``tiny.en``, faster) or a faster-whisper model directory."""
    fallback_engine: str | None = None
    """An engine (with its default voice) that speaks what no candidate said well enough; None:
    the best candidate is sent anyway."""
    languages: tuple[str, ...] = ("en",)
    """What this model speaks (the English checkpoint; tokens of other scripts are unknown)."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        return known_device(device)
