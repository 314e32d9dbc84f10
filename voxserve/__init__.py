"""voxserve: a self-hosted speech server and library.

    async for chunk in voxserve.synthesize(voxserve.SpeechRequest(input="Hello!", voice="joe")):
        ...

    voxserve.synthesize_to_file("Hello!", "hello.mp3")  # async code: synthesize_to_file_async

Names are imported on first use, so ``import voxserve.client`` stays light.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AudioChunk": "voxserve.audio.frames",
    "EngineRegistry": "voxserve.engines.registry",
    "Progress": "voxserve.synthesis.synthesizer",
    "Settings": "voxserve.config",
    "SpeechRequest": "voxserve.request",
    "Synthesizer": "voxserve.synthesis.synthesizer",
    "default_synthesizer": "voxserve.api",
    "estimate": "voxserve.api",
    "load_settings": "voxserve.config",
    "synthesize": "voxserve.api",
    "synthesize_to_file": "voxserve.api",
    "synthesize_to_file_async": "voxserve.api",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'voxserve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
