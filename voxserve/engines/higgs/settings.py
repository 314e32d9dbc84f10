"""The Higgs Audio V2 engine's settings: ``[engines.higgs]``, then ``HIGGS_*`` variables.

Every key can be set in the TOML table (or ``VOXSERVE_ENGINES__HIGGS__KEY``), or as ``HIGGS_KEY``
in the environment (``HIGGS_MODEL_PATH``, ``HIGGS_DEVICE``...), the names Higgs Audio's own tools
use; a key set in voxserve's configuration wins over the ``HIGGS_*`` variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from voxserve.config import as_list

ENV_PREFIX = "HIGGS_"
# Keys of any engine's table that the synthesizer and registry read themselves.
SYNTHESIZER_KEYS = frozenset({"concurrency", "keep_alive"})
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class HiggsSettings:
    model_path: str = "bosonai/higgs-audio-v2-generation-3B-base"
    """A local directory, or a Hugging Face Hub id (used only when online or already cached)."""
    audio_tokenizer_path: str = "bosonai/higgs-audio-v2-tokenizer"
    allow_downloads: bool = False
    """Fetch a Hub id that is not in the Hugging Face cache. The top-level ``allow_downloads``
    turns it on when this table exists or higgs is the default engine; never a request."""
    device: str = "auto"
    """auto (CUDA when there is one), cpu, cuda or cuda:N."""
    dtype: str = "auto"
    """auto (bfloat16 on CUDA, float32 on CPU), float32, float16 or bfloat16."""
    flash_attention: bool = False
    """FlashAttention 2 (needs CUDA and the flash-attn package); off: PyTorch's SDPA."""
    max_new_tokens: int = 2048
    """Longest generation, in steps of 40 ms; shorter texts get a proportionally smaller cap."""
    temperature: float = 0.3
    top_p: float = 0.95
    top_k: int = 50
    ras_window: int = 7
    """Repetition-aware sampling window in steps (0: off); see ras_max_repeat."""
    ras_max_repeat: int = 2
    """A code seen this often within the window is resampled without temperature."""
    seed: int | None = None
    """Fixed seed for every request; None: a random one per request, kept across its chunks."""
    scene: str = "Audio is recorded from a quiet room."
    """The scene when a request gives no instructions; empty: none."""
    max_reference_seconds: float = 30.0
    context_chunks: int = 2
    """Earlier chunks of the same text fed back as examples, so a long text keeps one voice."""
    max_input_chars: int = 400
    max_batch: int = 0
    """Requests generated together in one batch; 0: 8 on CUDA, 1 on CPU."""
    batch_wait_ms: float = 5.0
    """How long the first request of a batch waits for others to join it."""
    first_chunk_frames: int = 8
    """Frames (40 ms each) in the first decoded window: small, so that audio starts sooner."""
    chunk_frames: int = 25
    decode_context_frames: int = 6
    """Frames of left context and of look-ahead around each decoded window."""
    crossfade_ms: float = 5.0
    languages: tuple[str, ...] = ("en", "zh")

    @classmethod
    def from_sources(
        cls, settings: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> HiggsSettings:
        """Merge ``settings`` over ``HIGGS_*`` variables over the defaults, and validate."""
        environ = os.environ if environ is None else environ
        known = {item.name: item for item in fields(cls)}
        values: dict[str, Any] = {}
        for name in known:
            variable = ENV_PREFIX + name.upper()
            if variable in environ:
                values[name] = _convert(name, environ[variable], known[name].type, variable)
        unknown = sorted(set(settings) - set(known) - SYNTHESIZER_KEYS)
        if unknown:  # a misspelt model_path must not quietly load the default model
            raise ValueError(
                f"unknown [engines.higgs] settings: {', '.join(unknown)}; known: "
                f"{', '.join(sorted(set(known) | SYNTHESIZER_KEYS))}"
            )
        for name, value in settings.items():
            if name in known:
                values[name] = _convert(name, value, known[name].type, f"engines.higgs.{name}")
        return cls(**values)

    def __post_init__(self) -> None:
        problems = []
        device = self.device
        if not (device in ("auto", "cpu", "cuda") or _is_cuda_index(device)):
            problems.append(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.temperature <= 0:
            problems.append("temperature must be above 0")
        if not 0 < self.top_p <= 1:
            problems.append("top_p must be in (0, 1]")
        for name in ("top_k", "ras_window", "context_chunks", "max_batch"):
            if getattr(self, name) < 0:
                problems.append(f"{name} cannot be negative")
        for name in ("max_new_tokens", "ras_max_repeat", "max_input_chars"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for name in ("first_chunk_frames", "chunk_frames"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.decode_context_frames < 0 or self.crossfade_ms < 0 or self.batch_wait_ms < 0:
            problems.append(
                "decode_context_frames, crossfade_ms and batch_wait_ms cannot be negative"
            )
        if self.max_reference_seconds <= 0:
            problems.append("max_reference_seconds must be above 0")
        if not self.model_path or not self.audio_tokenizer_path:
            problems.append("model_path and audio_tokenizer_path cannot be empty")
        if problems:
            raise ValueError("invalid [engines.higgs] settings: " + "; ".join(problems))


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def _convert(name: str, value: Any, kind: Any, where: str) -> Any:
    """Environment values are strings, TOML values typed: bring both to the field's type."""
    kind = str(kind)
    try:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            if "None" in kind:
                return None
            raise ValueError("a value is required")
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError("expected true or false")
            return text in ("1", "true", "yes", "on")
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected a whole number")
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("tuple"):
            return tuple(str(item).strip() for item in as_list(value) if str(item).strip())
        return str(value).strip()
    except (TypeError, ValueError) as error:
        raise ValueError(f"invalid {where}={value!r} for {name}: {error}") from None
