"""The voice chat's models, warmed once per process, while the first user gets ready to speak.

Cold, the first turn answered ~2 s later than the next ones (loading the voice takes ~1.9 s, the
LLM reading its persona prompt ~0.5 s, Whisper's first run ~75 ms). The models are shared by
every connection, so warming them is the process's business, not each connection's: done per
connection, 200 idle chat sockets cost ~22 CPU-seconds and held up everyone else's speech.
The first chat connection starts it (or the server's start, with ``chat.preload``); later ones
find it started, or done, and cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

from voxserve.chat.characters import Character, build_messages
from voxserve.chat.llm import LLM
from voxserve.chat.stt import Listener
from voxserve.config import ChatSettings
from voxserve.errors import VoxserveError
from voxserve.request import SpeechOptions
from voxserve.synthesis.synthesizer import Synthesizer

logger = logging.getLogger("voxserve.chat")


class ChatWarmup:
    """Warms Whisper, the LLM (on the first character's persona) and the characters' engines,
    once. A step that fails is left to the turn that meets it, which reports it."""

    def __init__(self, synthesizer: Synthesizer, llm: LLM | None, settings: ChatSettings):
        self.synthesizer = synthesizer
        self.llm = llm
        self.settings = settings
        self._task: asyncio.Task | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        """Start warming, unless started already; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._warm())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _warm(self) -> None:
        characters = [Character(**c) for c in self.settings.characters]
        listener = Listener.for_chat(self.synthesizer.resolver.transcriber, self.settings)
        steps: list[Callable[[], Awaitable]] = [
            functools.partial(asyncio.to_thread, listener.warm_up)
        ]
        if self.llm is not None:
            first, others = characters[0], characters[1:]
            steps.append(
                functools.partial(self.llm.warm_up, build_messages(first, [], others=others))
            )
        engines = set()
        for each in characters:
            with contextlib.suppress(VoxserveError):  # a bad voice is reported when it speaks
                voicing = await self.synthesizer.resolver.resolve(SpeechOptions(voice=each.voice))
                engines.add(voicing.engine.name)
        steps += [functools.partial(self.synthesizer.registry.ensure_loaded, e) for e in engines]
        for step in steps:  # one at a time, the ears first: the user speaks first
            try:
                await step()
            except Exception as error:  # noqa: BLE001 - best effort: the turn reports it
                logger.info("warming up the chat: %s", error)
