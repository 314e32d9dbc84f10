"""Wyoming voice names: ``engine/voice`` in ``info``, and a ``synthesize``'s voice as options.

Home Assistant keeps the name of the voice a user picked, so a name must mean the same voice
whichever engines are served: it carries its engine. A name without a served engine in front
(``joe``, ``alloy``, a voice profile's id) is read as a request's ``voice`` is, on the default
engine; no name, the default voice, in the ``language`` asked for where one is.
"""

from __future__ import annotations

from typing import Any

from voxserve.config import Settings
from voxserve.engines.base import Engine, Voice
from voxserve.engines.registry import EngineRegistry

SEPARATOR = "/"


def voice_name(voice: Voice) -> str:
    return f"{voice.engine}{SEPARATOR}{voice.id}"


def served_engines(settings: Settings, registry: EngineRegistry) -> list[Engine]:
    """The installed engines Wyoming offers: ``wyoming.engines``, else the default engine and
    every engine the operator gave a table (the others may need keys or downloads)."""
    names = settings.wyoming.engines or [settings.default_engine, *settings.engines]
    unique = dict.fromkeys(name for name in names if name in registry.names())
    return [registry.get(name) for name in unique if registry.is_installed(name)]


def voice_fields(voice: Any, registry: EngineRegistry) -> dict[str, Any]:
    """The speech request fields a ``synthesize``'s (or ``synthesize-start``'s) ``voice`` asks
    for: ``voice``, ``model``, ``language``. Its
    ``speaker``, on an engine that speaks a cast (``multi_speaker``), is the voice of that
    engine to speak in (``info`` lists them); other engines have no speakers, and ignore it."""
    voice = voice if isinstance(voice, dict) else {}
    name, language = voice.get("name"), voice.get("language")
    model = None
    if isinstance(name, str) and SEPARATOR in name:
        engine, own = name.split(SEPARATOR, 1)
        if engine in registry.names():
            model, name = engine, own
    speaker = voice.get("speaker")
    if model is not None and speaker and registry.get(model).capabilities.multi_speaker:
        name = speaker
    return {"voice": name, "model": model, "language": None if name else language}
