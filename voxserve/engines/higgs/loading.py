"""Loading Higgs Audio V2: model, codec and processor from local directories or the Hub.

A Hub id is fetched only with ``allow_downloads`` (an operator's choice, never a request's);
without it the weights come from the Hugging Face cache or not at all, and nothing touches the
network.

The processor is put together from its parts rather than with ``HiggsAudioV2Processor
.from_pretrained``, which loads the codec named in the checkpoint's ``processor_config.json``: the
``audio_tokenizer_path`` setting must win, so that both parts can be local directories offline.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxserve.engines.higgs.settings import HiggsSettings
from voxserve.errors import EngineUnavailableError, InvalidRequestError

SAMPLE_RATE = 24000
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class EngineName:
    """Whose weights are missing, as error messages name it."""

    name: str
    """Its ``[engines.NAME]``."""
    title: str


HIGGS = EngineName("higgs", "Higgs Audio")


@dataclass(frozen=True)
class Runtime:
    """Everything loading made."""

    model: Any
    codec: Any
    processor: Any
    worker: Any
    codebooks: int
    samples_per_frame: int
    frame_rate: float


def load_runtime(config: HiggsSettings, device: str, max_batch: int) -> Runtime:
    # First: an engine with no weights here is refused before anything is imported or read.
    codec_path = locate(config, "audio tokenizer", "audio_tokenizer_path")
    model_path = locate(config, "model", "model_path")
    offline = not config.allow_downloads

    from voxserve.engines.higgs import torchaudio_compat

    torchaudio_compat.install()  # before the codec's module imports torchaudio
    import torch
    from transformers import (
        AutoTokenizer,
        DacFeatureExtractor,
        HiggsAudioV2ForConditionalGeneration,
        HiggsAudioV2Processor,
    )
    from transformers.models.higgs_audio_v2_tokenizer import modeling_higgs_audio_v2_tokenizer

    from voxserve.engines.higgs.generation import GenerationWorker, Sampler
    from voxserve.engines.higgs.prompts import CHAT_TEMPLATE

    dtype_name = config.dtype
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
    attention = "sdpa"
    if config.flash_attention:
        if not device.startswith("cuda") or importlib.util.find_spec("flash_attn") is None:
            raise EngineUnavailableError(
                "flash_attention needs a CUDA device and the flash-attn package "
                "(pip install flash-attn); or set [engines.higgs] flash_attention = false",
                code="engine_misconfigured",
            )
        attention = "flash_attention_2"

    with missing_weights(config, "audio tokenizer", "audio_tokenizer_path"):
        # The codec stays in float32: it is small, and its output is the audio itself.
        codec_class = modeling_higgs_audio_v2_tokenizer.HiggsAudioV2TokenizerModel
        codec = codec_class.from_pretrained(codec_path, local_files_only=offline)
        codec = codec.to(device).eval()
    if codec.config.sample_rate != SAMPLE_RATE:
        raise EngineUnavailableError(
            f"the audio tokenizer at {codec_path!r} works at {codec.config.sample_rate} Hz; "
            f"higgs expects {SAMPLE_RATE}",
            code="engine_misconfigured",
        )
    with missing_weights(config, "model", "model_path"):
        model = HiggsAudioV2ForConditionalGeneration.from_pretrained(
            model_path,
            dtype=getattr(torch, dtype_name),
            attn_implementation=attention,
            local_files_only=offline,
        )
        model = model.to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=offline)
    processor = HiggsAudioV2Processor(
        DacFeatureExtractor(
            sampling_rate=codec.config.sample_rate, hop_length=codec.config.hop_length
        ),
        tokenizer,
        codec,
        chat_template=tokenizer.chat_template or CHAT_TEMPLATE,
        audio_stream_bos_id=model.config.audio_stream_bos_id,
        audio_stream_eos_id=model.config.audio_stream_eos_id,
    )
    sampling = Sampler(
        config.temperature, config.top_p, config.top_k, config.ras_window, config.ras_max_repeat
    )
    worker = GenerationWorker(
        model, sampling, max_batch=max_batch, batch_wait=config.batch_wait_ms / 1000
    )
    return Runtime(
        model=model,
        codec=codec,
        processor=processor,
        worker=worker,
        codebooks=model.config.num_codebooks,
        samples_per_frame=math.prod(codec.config.acoustic_model_config.upsampling_ratios),
        frame_rate=codec.config.frame_rate,
    )


def decode_frames(codec: Any, frames: Any) -> np.ndarray:
    """Frames (codebooks x n) to n frames' worth of samples, in [-1, 1]."""
    import torch

    # Codes outside the codebook (a stray stream marker mid-stream) are clipped, as the
    # processor's own decode does.
    codes = frames.clamp(0, codec.config.codebook_size - 1)[None].to(codec.device)
    with torch.inference_mode():
        audio = codec.decode(codes).audio_values[0, 0]
    return np.clip(audio.float().cpu().numpy(), -1.0, 1.0)


def locate(config: Any, what: str, setting: str, engine: EngineName = HIGGS) -> str:
    """A local directory, or a Hub id left for transformers to resolve: from the cache, or
    fetched when downloads are allowed. ``config``: the engine's settings, with ``setting`` and
    ``allow_downloads`` (Higgs' or another engine's on transformers)."""
    path = getattr(config, setting)
    local = Path(path).expanduser()
    if local.is_dir():
        return str(local)
    if not _HUB_ID.fullmatch(path) or local.exists():
        raise _missing(config, what, setting, engine)
    if not (config.allow_downloads or _cached(path)):
        default = _default(config, setting)
        name = engine.name
        raise InvalidRequestError(
            f"engine {name!r} is not set up here: its {what} {path!r} is neither a local "
            "directory nor in the Hugging Face cache, and downloads are off. Set "
            f"[engines.{name}] {setting} (VOXSERVE_ENGINES__{name.upper()}__{setting.upper()}) "
            "to a directory holding it "
            f"(`hf download {default} --local-dir DIR`), or set allow_downloads = true "
            f"(VOXSERVE_ALLOW_DOWNLOADS) with an [engines.{name}] table to fetch it on first use.",
            param="model",
            code="engine_not_configured",
        )
    return path


def _cached(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds ``repo_id`` (its config.json): no network."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


@contextlib.contextmanager
def missing_weights(
    config: Any, what: str, setting: str, engine: EngineName = HIGGS
) -> Iterator[None]:
    """Turns a failed load into EngineUnavailableError saying where the weights go."""
    from huggingface_hub.errors import HFValidationError

    try:
        yield
    except (OSError, HFValidationError) as error:  # no such directory, file or repo; offline
        raise _missing(config, what, setting, engine, error) from error


def _missing(
    config: Any, what: str, setting: str, engine: EngineName, error: BaseException | None = None
) -> EngineUnavailableError:
    path, default, name = getattr(config, setting), _default(config, setting), engine.name
    reason = f" ({error})" if error else ""
    return EngineUnavailableError(
        f"{engine.title} {what} not found at {path!r}{reason}. Download {default} (for example "
        f"`hf download {default} --local-dir DIR`) and set [engines.{name}] {setting} "
        f"(or VOXSERVE_ENGINES__{name.upper()}__{setting.upper()}) to that directory; a Hub id "
        "is found in the Hugging Face cache, or fetched when allow_downloads is on.",
        code="model_not_found",
    )


def _default(config: Any, setting: str) -> str:
    """The Hub id ``setting`` names by default: what to download."""
    return type(config).model_fields[setting].default
