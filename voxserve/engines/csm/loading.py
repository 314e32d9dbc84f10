"""Loading Sesame CSM-1B: model (with its Mimi codec) and processor, from a directory or the Hub.

A Hub id is fetched only with ``allow_downloads`` (an operator's choice, never a request's); the
directory, the cache and the error that names the setting are Higgs' (``higgs.loading``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voxserve.engines.csm.settings import CsmSettings
from voxserve.engines.higgs.loading import EngineName, locate, missing_weights
from voxserve.engines.transformers_engine import SAMPLE_RATE
from voxserve.errors import EngineUnavailableError

CSM = EngineName("csm", "Sesame CSM")


@dataclass(frozen=True)
class Runtime:
    """Everything loading made."""

    model: Any
    processor: Any
    worker: Any

    @property
    def codec(self) -> Any:
        """Mimi, inside the model."""
        return self.model.codec_model

    @property
    def samples_per_frame(self) -> int:
        config = self.codec.config
        return round(config.sampling_rate / config.frame_rate)


def load_runtime(config: CsmSettings, device: str, max_batch: int) -> Runtime:
    # First: an engine with no weights here is refused before anything is imported or read.
    model_path = locate(config, "model", "model_path", CSM)
    offline = not config.allow_downloads

    from voxserve.engines.higgs import torchaudio_compat

    # Before transformers is first asked for anything: it decides then, once for the process,
    # whether Higgs' codec (which imports torchaudio) can be built, and Higgs may load next.
    torchaudio_compat.install()
    import torch
    from transformers import CsmForConditionalGeneration, CsmProcessor

    from voxserve.engines.csm.generation import CsmWorker, Sampler
    from voxserve.engines.csm.prompts import CHAT_TEMPLATE

    dtype_name = config.dtype
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
    with missing_weights(config, "model", "model_path", CSM):
        model = CsmForConditionalGeneration.from_pretrained(
            model_path, dtype=getattr(torch, dtype_name), local_files_only=offline
        )
        processor = CsmProcessor.from_pretrained(model_path, local_files_only=offline)
    model = model.to(device).eval()
    model.codec_model.float()  # small, and its output is the audio itself
    if model.codec_model.config.sampling_rate != SAMPLE_RATE:
        raise EngineUnavailableError(
            f"the Mimi codec of {model_path!r} works at {model.codec_model.config.sampling_rate} "
            f"Hz; csm expects {SAMPLE_RATE}",
            code="engine_misconfigured",
        )
    processor.chat_template = processor.chat_template or CHAT_TEMPLATE
    sampling = Sampler(config.temperature, config.top_k, config.top_p)
    worker = CsmWorker(
        model, sampling, max_batch=max_batch, batch_wait=config.batch_wait_ms / 1000, engine="csm"
    )
    return Runtime(model, processor, worker)
