"""What the engines on transformers' native ports share (Higgs Audio V2, Sesame CSM).

Each loads a runtime (model, codec, processor, and a worker thread that batches ``generate``),
and declares, before loading and without torch, how many requests one batch takes:

- ``max_batch``, the batch and so the declared concurrency, and ``device``, the torch device;
- ``load`` once under a lock, ``unload`` closing the worker and giving CUDA memory back;
- reference clips encoded by the runtime's codec once per file version (path, mtime, size).

Importing this needs neither torch nor transformers.
"""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import os
import threading
from abc import abstractmethod
from pathlib import Path
from typing import Any

from voxserve.engines.base import BlockingEngine, SettingsGiven
from voxserve.engines.reference_clips import PerFileCache, reference_clip
from voxserve.errors import EngineError, EngineUnavailableError

SAMPLE_RATE = 24000
"""What both engines' codecs speak."""
CUDA_BATCH = 8
"""Requests batched together on a GPU when ``max_batch`` is 0."""


class TransformersEngine(BlockingEngine):
    """An engine whose ``_load_runtime`` makes a runtime with ``worker`` (a
    ``higgs.generation.GenerationWorker``) and ``codec``; its settings have ``device``,
    ``max_batch`` and ``max_reference_seconds``."""

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        self._runtime: Any = None
        self._load_lock = threading.Lock()
        self._references: PerFileCache[Any] = PerFileCache()  # a clip's codes
        # A fast tokenizer resets its padding settings on every call: concurrent calls collide.
        self._prompt_lock = threading.Lock()

    @functools.cached_property
    def max_batch(self) -> int:
        """Requests generated together: ``max_batch``, else 8 on CUDA and 1 on the CPU. It is
        both the worker's batch and the declared concurrency, so the scheduler admits what one
        batch takes.

        Declared before loading, without torch (importing it takes seconds and gigabytes), so for
        ``device = "auto"`` CUDA is told from what can be seen without it: a torch build that is
        not a ``+cpu`` one, and a GPU the NVIDIA driver lists. Where that guess is wrong, the
        batch still works, on the device torch finds at load: set ``max_batch`` to choose."""
        if self.settings.max_batch:
            return self.settings.max_batch
        device = self.settings.device
        cuda = device.startswith("cuda") or (device == "auto" and cuda_visible())
        return CUDA_BATCH if cuda else 1

    @functools.cached_property
    def device(self) -> str:
        device = self.settings.device
        if device == "cpu":
            return device
        import torch

        if not torch.cuda.is_available():
            if device == "auto":
                return "cpu"
            name = self.name
            raise EngineUnavailableError(
                f"{name} is set to device {device!r}, but torch sees no CUDA device (a CPU build "
                f"of torch, or no GPU): set [engines.{name}] device "
                f"(VOXSERVE_ENGINES__{name.upper()}__DEVICE) to cpu or auto",
                code="engine_misconfigured",
            )
        return "cuda" if device == "auto" else device

    @abstractmethod
    def _load_runtime(self) -> Any:
        """Load the model and start its worker; blocking."""

    def load(self) -> None:
        with self._load_lock:
            if self._runtime is None:
                self._runtime = self._load_runtime()

    def unload(self) -> None:
        with self._load_lock:
            runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.worker.close()
            del runtime
            gc.collect()
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()

    @property
    def worker_stats(self) -> Any:
        """Batches and jobs generated so far (``WorkerStats``)."""
        return self._loaded().worker.stats

    def _loaded(self) -> Any:
        runtime = self._runtime
        if runtime is None:
            raise EngineError(f"the {self.name} engine is not loaded", code="engine_not_loaded")
        return runtime

    def _reference_codes(self, path: str) -> Any:
        """A reference clip's codes (codebooks x frames, on the CPU), encoded once per file
        version."""
        return self._references.get(path, self._encode_reference)

    def _encode_reference(self, path: str) -> Any:
        import torch

        codec = self._loaded().codec
        clip = reference_clip(path, SAMPLE_RATE, self.name, self.settings.max_reference_seconds,
                              shortest=1 / codec.config.frame_rate)  # fmt: skip
        values = torch.from_numpy(clip.samples)[None, None].to(codec.device)
        with torch.inference_mode():
            return codec.encode(values).audio_codes[0].cpu()


def cuda_visible() -> bool:
    """Whether torch will likely find CUDA, told without importing it: its build is not a CPU-only
    one (``2.5.1+cpu``), and the NVIDIA driver lists a GPU that ``CUDA_VISIBLE_DEVICES`` does not
    hide."""
    try:
        build = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if build.endswith("+cpu") or (visible is not None and visible.strip() in ("", "-1")):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())
