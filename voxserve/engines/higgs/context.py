"""What the Higgs engine remembers between the chunks of one long text.

The synthesizer gives every render call a fresh ``context_id`` (engines that declare
``carries_context``); its segments then arrive one after another, in order. Per id the engine keeps
the last few chunks it spoke (text and codes) and one seed, and feeds the chunks back as example
turns: each chunk continues the voice of the one before instead of drawing a new one. A different
voice or reference under the same id starts over. Ids are forgotten least recently used first.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voxserve.engines.higgs.prompts import Spoken


@dataclass
class ContextState:
    voice: Hashable
    """What the chunks were spoken with; another voice under the same id starts over."""
    seed: int
    history: deque[Spoken] = field(default_factory=deque)


class ContextMemory:
    def __init__(self, chunks: int, fixed_seed: int | None = None, capacity: int = 256):
        self.chunks = chunks
        self.fixed_seed = fixed_seed
        self.capacity = capacity
        self._states: OrderedDict[str, ContextState] = OrderedDict()
        self._lock = threading.Lock()

    def recall(self, context_id: str | None, voice: Hashable) -> ContextState | None:
        """The state for ``context_id`` (None: no memory), emptied if ``voice`` changed."""
        if context_id is None:
            return None
        with self._lock:
            state = self._states.get(context_id)
            if state is None:
                seed = self.fixed_seed if self.fixed_seed is not None else random.getrandbits(31)
                state = self._states[context_id] = ContextState(voice, seed)
            elif state.voice != voice:
                state.voice = voice
                state.history.clear()
            self._states.move_to_end(context_id)
            while len(self._states) > self.capacity:
                self._states.popitem(last=False)
            return state

    def remember(self, state: ContextState, spoken: Spoken) -> None:
        """Keep a finished chunk, dropping the oldest beyond ``chunks``."""
        with self._lock:
            state.history.append(spoken)
            while len(state.history) > self.chunks:
                state.history.popleft()
