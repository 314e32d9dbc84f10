"""Recently synthesized segments, so repeated phrases ("One moment, please.") cost nothing."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from voxserve.audio.frames import AudioChunk

MAX_CACHED_CHARS = 300  # long segments rarely repeat; they would only push short ones out


class SegmentCache:
    """Least-recently-used audio of whole segments, bounded in bytes (0 disables it)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, list[AudioChunk]] = OrderedDict()
        self._bytes = 0

    def wants(self, text: str) -> bool:
        return self.max_bytes > 0 and len(text) <= MAX_CACHED_CHARS

    def get(self, key: Hashable) -> list[AudioChunk] | None:
        chunks = self._entries.get(key)
        if chunks is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return chunks

    def put(self, key: Hashable, chunks: list[AudioChunk]) -> None:
        size = sum(chunk.samples.nbytes for chunk in chunks)
        if size > self.max_bytes or key in self._entries:
            return
        self._entries[key] = chunks
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= sum(chunk.samples.nbytes for chunk in evicted)
