"""A stand-in for the one piece of torchaudio that the Higgs Audio V2 codec uses.

transformers' ``modeling_higgs_audio_v2_tokenizer`` runs ``import torchaudio`` when it loads, and
uses one function from it: ``torchaudio.functional.resample``, to take reference audio from 24 kHz
to the 16 kHz its semantic (HuBERT) encoder expects. torchaudio's compiled extension must match
the installed torch exactly, and the torchaudio builds on the package index are CUDA builds: beside
a CPU build of torch, ``import torchaudio`` fails (``OSError: Could not load this library``).

``install()`` therefore tries the real torchaudio first and keeps it whenever it imports. Only when
that fails does it register this stand-in as ``torchaudio`` in ``sys.modules``: a module holding
``functional.resample``, the same windowed-sinc (Hann) algorithm and defaults as torchaudio's
(BSD-2-Clause), written with torch operations, so that codes match those of the real library.
Anything else asked of the stand-in raises an error that says what it is and how to get the real
thing.
"""

from __future__ import annotations

import functools
import importlib.machinery
import math
import sys
import threading
import types
from typing import Any

import torch

STAND_IN_VERSION = "0+voxserve.stand-in"
_install_lock = threading.Lock()


def install() -> bool:
    """Make ``import torchaudio`` work; True if the stand-in was registered (now or before)."""
    with _install_lock:
        present = sys.modules.get("torchaudio")
        if present is not None:
            return getattr(present, "__version__", None) == STAND_IN_VERSION
        try:
            import torchaudio  # noqa: F401
        # A build for another torch fails while loading its extension: OSError from the loader,
        # RuntimeError from torch.ops; a missing package: ImportError.
        except (ImportError, OSError, RuntimeError):
            pass
        else:
            return False
        for name in [name for name in sys.modules if name.split(".")[0] == "torchaudio"]:
            del sys.modules[name]  # what a failed import left half-initialised
        sys.modules["torchaudio"] = _stand_in()
        sys.modules["torchaudio.functional"] = sys.modules["torchaudio"].functional
        # transformers asks once whether torchaudio is there, and remembers the answer.
        from transformers.utils import import_utils

        import_utils.is_torchaudio_available.cache_clear()
        return True


def resample(
    waveform: torch.Tensor,
    orig_freq: int,
    new_freq: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
    resampling_method: str = "sinc_interp_hann",
    beta: float | None = None,
) -> torch.Tensor:
    """``torchaudio.functional.resample``: band-limited sinc interpolation over the last axis."""
    if resampling_method != "sinc_interp_hann" or beta is not None:
        raise NotImplementedError(
            f"voxserve's torchaudio stand-in resamples with 'sinc_interp_hann' only, not "
            f"{resampling_method!r}"
        )
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError("sample rates must be positive")
    if int(orig_freq) != orig_freq or int(new_freq) != new_freq:
        raise ValueError("sample rates must be whole numbers")
    if orig_freq == new_freq:
        return waveform
    if not waveform.is_floating_point():
        raise TypeError(f"expected a floating point waveform, got {waveform.dtype}")
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    kernel, width = _kernel(
        orig, new, lowpass_filter_width, rolloff, waveform.device, waveform.dtype
    )

    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    # y[j + new] uses the same filter as y[j] on x shifted by `orig`: one strided convolution
    # with `new` filters yields every output phase at once.
    resampled = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig)
    resampled = resampled.transpose(1, 2).reshape(flat.shape[0], -1)
    resampled = resampled[..., : math.ceil(new * length / orig)]
    return resampled.reshape(*shape[:-1], resampled.shape[-1])


@functools.lru_cache(maxsize=16)
def _kernel(
    orig: int,
    new: int,
    lowpass_filter_width: int,
    rolloff: float,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, int]:
    """The ``new`` polyphase filters, computed as torchaudio computes them, in ``dtype``."""
    if lowpass_filter_width <= 0:
        raise ValueError("lowpass_filter_width must be positive")
    base_freq = min(orig, new) * rolloff  # below both Nyquists: no aliasing either way
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    index = torch.arange(-width, width + orig, dtype=dtype, device=device)[None, None] / orig
    times = torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None, None] / new + index
    times = (times * base_freq).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(times * math.pi / lowpass_filter_width / 2) ** 2
    times = times * math.pi
    sinc = torch.where(times == 0, torch.ones_like(times), times.sin() / times)
    return sinc * (window * (base_freq / orig)), width


def _stand_in() -> types.ModuleType:
    module = _StandInModule("torchaudio")
    module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)  # find_spec needs one
    module.__version__ = STAND_IN_VERSION
    functional = _StandInModule("torchaudio.functional")
    functional.__spec__ = importlib.machinery.ModuleSpec("torchaudio.functional", None)
    functional.resample = resample
    module.functional = functional
    return module


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"{self.__name__}.{name} is not available: voxserve's torchaudio stand-in provides "
            "only what its engines use (functional.resample for Higgs Audio's codec; Chatterbox "
            "adds transforms and compliance.kaldi.fbank). Install a torchaudio build that "
            "matches your torch for the rest."
        )
