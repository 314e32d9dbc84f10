"""voxserve: a self-hosted speech server and library.

async for chunk in voxserve.synthesize(voxserve.SpeechRequest(input="Hello!", voice="joe")):
    ...

voxserve.synthesize_to_file("Hello!", "hello.mp3")
"""

__version__ = "0.1.0"

from voxserve.api import default_synthesizer, synthesize, synthesize_to_file  # noqa: E402
from voxserve.audio.frames import AudioChunk  # noqa: E402
from voxserve.config import Settings, load_settings  # noqa: E402
from voxserve.engines.registry import EngineRegistry  # noqa: E402
from voxserve.request import SpeechRequest  # noqa: E402
from voxserve.synthesis.synthesizer import Progress, Synthesizer  # noqa: E402

__all__ = [
    "AudioChunk",
    "EngineRegistry",
    "Progress",
    "Settings",
    "SpeechRequest",
    "Synthesizer",
    "default_synthesizer",
    "load_settings",
    "synthesize",
    "synthesize_to_file",
]
