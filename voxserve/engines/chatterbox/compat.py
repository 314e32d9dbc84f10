"""What ``import chatterbox.tts`` needs beside this project's stack, made present before it runs.

- torchaudio: the index's builds are CUDA ones that fail beside CPU torch (see
  ``higgs.torchaudio_compat``). Where the real one does not import, the project's stand-in gets
  the parts Chatterbox and resemble-perth use (``torchaudio_parts``).
- ``pkg_resources``: resemble-perth's PerthNet package imports ``resource_filename`` from it to
  find its packaged weights, inside a ``try`` that turns any ImportError into
  ``PerthImplicitWatermarker = None``. setuptools 81 and later have no ``pkg_resources``; where it
  is missing, a module holding that one function (on ``importlib.resources``) stands in for it
  while perth imports, and only then.

``install()`` is idempotent and thread-safe; the engine calls it before importing Chatterbox.
"""

from __future__ import annotations

import importlib.machinery
import importlib.resources
import sys
import threading
import types

from voxserve.engines.higgs import torchaudio_compat

_install_lock = threading.Lock()


def install() -> None:
    with _install_lock:
        if torchaudio_compat.install():
            _extend_torchaudio(sys.modules["torchaudio"])
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            # Only while perth imports (it binds the function then): left in sys.modules, a
            # one-function pkg_resources would mislead everything else that looks for it
            # (pytest's monkeypatch asks it for fixup_namespace_packages).
            sys.modules["pkg_resources"] = _pkg_resources()
            try:
                import perth.perth_net  # noqa: F401
            finally:
                del sys.modules["pkg_resources"]


def _extend_torchaudio(module: types.ModuleType) -> None:
    from voxserve.engines.chatterbox import torchaudio_parts as parts

    if "torchaudio.transforms" in sys.modules:
        return
    transforms = _module("torchaudio.transforms")
    for name in ("Resample", "Spectrogram", "InverseSpectrogram", "TimeStretch"):
        setattr(transforms, name, getattr(parts, name))
    compliance, kaldi = _module("torchaudio.compliance"), _module("torchaudio.compliance.kaldi")
    kaldi.fbank = parts.fbank
    compliance.kaldi = kaldi
    module.transforms, module.compliance = transforms, compliance
    for submodule in (transforms, compliance, kaldi):
        sys.modules[submodule.__name__] = submodule


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def _pkg_resources() -> types.ModuleType:
    module = _module("pkg_resources")
    module.resource_filename = resource_filename
    return module


def resource_filename(package: str, resource: str) -> str:
    """``pkg_resources.resource_filename`` for a package installed as files (every wheel here)."""
    return str(importlib.resources.files(package).joinpath(resource))
