"""Words from ElevenLabs' character alignment, and the lines of its timestamped stream.

Each line of ``POST /v1/text-to-speech/{voice_id}/stream/with-timestamps`` is
``{"audio_base64", "alignment": {"characters", "character_start_times_seconds",
"character_end_times_seconds"}, "normalized_alignment"}``. The characters of the text as written
(``alignment``) are grouped into words at whitespace, a word running on across lines. Their
times are taken as running from the start of the stream, but not trusted to: a line whose times
go back before those already seen restarts them, and is placed after the audio received before
it. Audio goes out up to the start of the latest word begun (no word can start before it any
more), so that each word is in the chunk its audio starts in, timed from that chunk's start.

A line that is not the JSON documented, or whose audio is not base64, is ElevenLabs' failure
(``parse_line``); an alignment that is not one loses its line's words, with a warning, and keeps
its audio.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from typing import Any

import numpy as np

from voxserve.audio.decode import Pcm16Stream
from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.errors import UpstreamError

logger = logging.getLogger("voxserve.engines.elevenlabs")

RESTART_TOLERANCE = 0.05
"""Seconds an alignment's times may step back (characters overlap) before they count as
restarted from the line's own audio."""


def parse_line(line: str) -> tuple[bytes, dict[str, Any] | None]:
    """A line's audio and alignment; a line that is not one is ElevenLabs' failure."""
    try:
        item = json.loads(line)
        audio = base64.b64decode(item["audio_base64"] or "", validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        shown = line if len(line) <= 80 else f"{line[:80]}..."
        raise UpstreamError(
            f"ElevenLabs sent a line of its timestamped stream that is not audio and alignment "
            f"({type(error).__name__}): {shown!r}",
            code="elevenlabs_bad_stream",
            retryable=True,
        ) from None
    return audio, item.get("alignment")


class Timeline:
    """Audio as it arrives and the words its alignment times: audio is handed on up to the start
    of the latest word begun (no word can start before it any more), each chunk with the words
    that start in it, timed from the chunk's start."""

    def __init__(self, rate: int):
        self.rate = rate
        self._pcm = Pcm16Stream(rate)
        self._pending = np.zeros(0, dtype=np.float32)
        self._start = 0.0
        """Seconds of audio handed on before ``_pending``."""
        self._received = 0.0
        self._offset = 0.0
        """Added to the alignment's times: 0 while they run from the stream's start."""
        self._latest_end = 0.0
        self._words: list[WordTiming] = []
        """Whole words not yet handed on."""
        self._word: WordTiming | None = None
        """The word begun, its end not yet known."""

    def feed(self, audio: bytes, alignment: Any) -> None:
        before = self._received
        if (chunk := self._pcm.feed(audio)) is not None:
            self._pending = np.concatenate((self._pending, chunk.samples))
            self._received += chunk.duration
        if alignment is None:
            return
        try:
            characters = alignment["characters"]
            times = list(zip(alignment["character_start_times_seconds"],
                             alignment["character_end_times_seconds"], strict=True))  # fmt: skip
            if len(characters) != len(times) or not all(
                isinstance(c, str) and math.isfinite(s) and math.isfinite(e)
                for c, (s, e) in zip(characters, times, strict=True)
            ):
                raise ValueError("characters and times do not match")
        except (KeyError, TypeError, ValueError) as error:
            logger.warning("ElevenLabs sent an alignment that is not one (%s): its words are lost",
                           error)  # fmt: skip
            return
        if times and times[0][0] + self._offset < self._latest_end - RESTART_TOLERANCE:
            self._offset = before  # its times run from its own audio
        for character, (start, end) in zip(characters, times, strict=True):
            start, end = start + self._offset, end + self._offset
            self._latest_end = max(self._latest_end, end)
            if character.isspace():
                self._close_word()
            elif self._word is None:
                self._word = WordTiming(character, start, end)
            else:
                self._word = WordTiming(self._word.text + character, self._word.start, end)

    def _close_word(self) -> None:
        if self._word is not None:
            self._words.append(self._word)
            self._word = None

    def ready(self) -> list[AudioChunk]:
        """The audio before the latest word's start, if any is pending."""
        # No word begun: the next begins after the latest character told of.
        told = self._word.start if self._word is not None else self._latest_end
        count = min(len(self._pending), round((told - self._start) * self.rate))
        return [self._take(count)] if count > 0 else []

    def finish(self) -> list[AudioChunk]:
        """The rest, with every word not yet handed on."""
        self._close_word()
        return [self._take(len(self._pending), last=True)] if len(self._pending) else []

    def _take(self, count: int, *, last: bool = False) -> AudioChunk:
        samples, self._pending = self._pending[:count], self._pending[count:]
        duration = count / self.rate
        end = self._start + duration
        # The words in order up to the first that starts later (times told out of order stay
        # in order, none lost or given twice).
        later = (place for place, word in enumerate(self._words) if word.start >= end)
        taken = len(self._words) if last else next(later, len(self._words))
        inside, self._words = self._words[:taken], self._words[taken:]
        # Never before the chunk's start; in the last chunk, never past the audio's end.
        limit = duration if last else math.inf
        words = tuple(_within(word.shifted(-self._start), limit) for word in inside)
        self._start = end
        return AudioChunk(samples, self.rate, words)


def _within(word: WordTiming, limit: float) -> WordTiming:
    """A word timed from its chunk: never before its start, nor past ``limit``."""
    start = min(max(word.start, 0.0), limit)
    return WordTiming(word.text, start, min(max(word.end, start), max(limit, start)))
