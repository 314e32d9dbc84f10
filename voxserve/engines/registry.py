"""Engines by name: which exist, which are installed, and one lazily loaded instance of each."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from voxserve.engines.base import Engine, EngineSettings, Voice
from voxserve.errors import EngineUnavailableError, InvalidRequestError


class RegistrySettings(Protocol):
    """What the registry reads of ``config.Settings`` (engines sit below the configuration,
    which checks their tables: named here, not imported)."""

    default_engine: str
    keep_alive: float
    allow_downloads: bool
    engines: dict[str, dict[str, Any]]

    @property
    def data_path(self) -> Path: ...

    def engine_settings(self, name: str) -> dict[str, Any]: ...


# name -> "module:Class"; imported only when used so heavy extras cost nothing until then. An
# engine module imports only what its settings and capabilities need at the top.
ENGINE_CLASSES: dict[str, str] = {
    "piper": "voxserve.engines.piper:PiperEngine",
    "higgs": "voxserve.engines.higgs:HiggsEngine",
    "csm": "voxserve.engines.csm:CsmEngine",
    "chatterbox": "voxserve.engines.chatterbox:ChatterboxEngine",
    "runpod": "voxserve.engines.runpod:RunpodEngine",
    "kokoro": "voxserve.engines.kokoro:KokoroEngine",
    "edge": "voxserve.engines.edge:EdgeEngine",
    "openai": "voxserve.engines.openai_speech:OpenAIEngine",
    "openai_compatible": "voxserve.engines.openai_speech:OpenAICompatibleEngine",
    "alltalk": "voxserve.engines.alltalk:AllTalkEngine",
    "zonos": "voxserve.engines.zonos:ZonosEngine",
    "elevenlabs": "voxserve.engines.elevenlabs:ElevenLabsEngine",
}

# OpenAI's model names, served by the default engine.
OPENAI_MODEL_NAMES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# OpenAI also publishes snapshots of each, "<name>-<date or version>" (gpt-4o-mini-tts-2025-03-20,
# tts-1-1106, tts-1-hd-1106); clients pin them, and they mean the same here as the undated names.
_OPENAI_SNAPSHOT = re.compile(
    rf"(?:{'|'.join(map(re.escape, OPENAI_MODEL_NAMES))})-(?:\d{{4}}-\d{{2}}-\d{{2}}|\d{{3,8}})"
)


def is_openai_model(name: str) -> bool:
    """Whether ``name`` is one of OpenAI's TTS model names, undated or a dated snapshot."""
    return name in OPENAI_MODEL_NAMES or _OPENAI_SNAPSHOT.fullmatch(name) is not None


def engine_class(name: str) -> type[Engine]:
    try:
        module_name, class_name = ENGINE_CLASSES[name].split(":")
    except KeyError:
        raise InvalidRequestError(
            f"unknown model {name!r}: use an engine ({', '.join(sorted(ENGINE_CLASSES))}) or "
            f"{', '.join(OPENAI_MODEL_NAMES)} (or a dated snapshot of one) for the default engine",
            param="model",
            code="model_not_found",
        ) from None
    return getattr(importlib.import_module(module_name), class_name)


class EngineRegistry:
    """One instance per engine, created on first use, loaded once (concurrent callers wait)."""

    def __init__(self, settings: RegistrySettings):
        self.settings = settings
        self._engines: dict[str, Engine] = {}
        self._loaded: set[str] = set()
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._thread_locks: dict[str, threading.Lock] = {}
        """One per engine, held while it loads: a load from a worker thread and one from the
        event loop (in a thread of its own) never run at once."""
        self._users: dict[str, int] = {}
        self._last_used: dict[str, float] = {}

    def names(self) -> list[str]:
        """Every engine's name, the default engine's first (its voices lead every listing)."""
        default = self.settings.default_engine
        return sorted(set(ENGINE_CLASSES) | set(self._engines), key=lambda n: (n != default, n))

    def register(self, engine: Engine) -> None:
        """Serve an engine instance under its name (a plugin, or a test double)."""
        self._engines[engine.name] = engine
        self._loaded.discard(engine.name)

    def get(self, name: str) -> Engine:
        engine = self._engines.get(name)
        if engine is None:
            cls = engine_class(name)
            if not cls.is_installed():
                hint = f"pip install 'voxserve[{cls.extra}]'" if cls.extra else "reinstall voxserve"
                raise EngineUnavailableError(
                    f"engine {name!r} is not installed: {hint}",
                    param="model",
                    code="engine_not_installed",
                )
            engine = cls(self.engine_settings(cls), data_dir=self.settings.data_path)
            self._engines[name] = engine
        return engine

    def engine_settings(self, cls: type[Engine]) -> EngineSettings:
        """An engine's ``[engines.NAME]`` table as its ``Settings``, with ``allow_downloads``
        from the top-level setting for an engine the operator set up (the default one, or one
        with a table): a request naming any other engine must not make the server fetch
        gigabytes."""
        name = cls.name
        table = self.settings.engine_settings(name)
        if (
            self.settings.allow_downloads
            and "allow_downloads" in cls.Settings.model_fields
            and (name == self.settings.default_engine or name in self.settings.engines)
        ):
            table.setdefault("allow_downloads", True)
        return cls.settings_from(table)

    def is_installed(self, name: str) -> bool:
        return name in self._engines or engine_class(name).is_installed()

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    async def ensure_loaded(self, name: str) -> Engine:
        """Load an engine once; concurrent callers wait for the same load."""
        engine = self.get(name)
        if name in self._loaded:
            return engine
        async with self._load_locks.setdefault(name, asyncio.Lock()):
            await asyncio.to_thread(self.load_now, name)
        return engine

    def load_now(self, name: str) -> Engine:
        """Load an engine once, blocking (a worker thread's way; ``ensure_loaded`` is the event
        loop's)."""
        engine = self.get(name)
        with self._thread_locks.setdefault(name, threading.Lock()):  # setdefault is atomic
            if name not in self._loaded:
                engine.load()
                self._loaded.add(name)
                self._last_used[name] = time.monotonic()
        return engine

    @contextlib.asynccontextmanager
    async def in_use(self, name: str) -> AsyncIterator[None]:
        """Mark an engine busy, so idle unloading leaves it alone."""
        self._users[name] = self._users.get(name, 0) + 1
        try:
            yield
        finally:
            self._users[name] -= 1
            self._last_used[name] = time.monotonic()

    def keep_alive(self, name: str) -> float:
        """Seconds an idle engine stays loaded; negative: forever.

        The default engine is kept forever unless its own table sets ``keep_alive``.
        """
        own = self.get(name).settings.keep_alive
        if own is not None:
            return own
        return -1.0 if name == self.settings.default_engine else self.settings.keep_alive

    async def unload_idle(self) -> list[str]:
        """Unload engines idle for longer than their keep-alive; returns their names."""
        unloaded = []
        for name in list(self._loaded):
            keep_alive = self.keep_alive(name)
            idle = time.monotonic() - self._last_used.get(name, 0.0)
            if keep_alive < 0 or self._users.get(name, 0) or idle < keep_alive:
                continue
            async with self._load_locks[name]:
                if self._users.get(name, 0) or name not in self._loaded:
                    continue
                self._loaded.discard(name)
                await asyncio.to_thread(self._engines[name].unload)
                unloaded.append(name)
        return unloaded

    def loaded_names(self) -> list[str]:
        return sorted(self._loaded)

    def engine_for_model(self, model: str | None) -> Engine:
        if model is None or is_openai_model(model):
            return self.get(self.settings.default_engine)
        return self.get(model)

    def all_voices(self) -> list[Voice]:
        voices: list[Voice] = []
        for name in self.names():
            if self.is_installed(name):
                voices.extend(self.get(name).voices())
        return voices

    def unload_all(self) -> None:
        for name in list(self._loaded):
            self._engines[name].unload()
        self._loaded.clear()
