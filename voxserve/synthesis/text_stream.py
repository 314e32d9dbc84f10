"""Text that arrives in pieces (an LLM's tokens) -> segments, each sentence once it is complete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from voxserve.synthesis.plan import PlanOptions, Segment, plan_segments
from voxserve.text import SentenceBuffer, normalize_text

FENCE = "```"


class TextStream:
    """Feed text with ``push``; ``segments()`` yields what is ready to synthesize, in order.

    Fenced code blocks are dropped as they stream past (the whole-text normalizer cannot see a
    fence that opened in an earlier sentence). Only the very first fragment is kept small, and it
    goes as soon as it is complete: a reply's opening clause ("Well,") is released before the rest
    of its sentence has arrived, which is most of a voice chat's time to first audio.
    """

    def __init__(self, voice: str, plan: PlanOptions, *, normalize: bool = True):
        self.voice = voice
        self.plan = plan
        self.normalize = normalize
        self._sentences = SentenceBuffer()
        self._segments: asyncio.Queue[Segment | None] = asyncio.Queue()
        self.released: list[Segment] = []
        """Every segment handed to synthesis so far, in order."""
        self._in_fence = False
        self._held = ""  # a possible fence still arriving: "`" or "``"
        self.ended = False

    def push(self, text: str) -> None:
        sentences = self._sentences.push(self._drop_code(text))
        if not sentences and not self.released and self.plan.small_first:
            opening = self._sentences.take_opening_clause()
            sentences = [opening] if opening else []
        self._plan(sentences)

    def flush(self) -> None:
        self._plan(self._sentences.flush())

    def end(self) -> None:
        """No more text: what is buffered is spoken, then ``segments()`` finishes."""
        if not self.ended:
            if not self._in_fence:
                self._plan(self._sentences.push(self._held))
            self.flush()
            self.ended = True
            self._segments.put_nowait(None)

    async def segments(self) -> AsyncIterator[Segment]:
        while (segment := await self._segments.get()) is not None:
            yield segment

    def _plan(self, sentences: list[str]) -> None:
        for sentence in sentences:
            text = normalize_text(sentence) if self.normalize else sentence
            plan = self.plan if not self.released else replace(self.plan, small_first=False)
            for segment in plan_segments(
                text, self.voice, plan, first_index=len(self.released), final=False
            ):
                self._segments.put_nowait(segment)
                self.released.append(segment)

    def _drop_code(self, text: str) -> str:
        text = self._held + text
        kept: list[str] = []
        while (at := text.find(FENCE)) >= 0:
            if not self._in_fence:
                kept.append(text[:at])
            kept.append("\n\n")  # a code block ends whatever sentence came before it
            self._in_fence = not self._in_fence
            text = text[at + len(FENCE) :]
        backticks = len(text) - len(text.rstrip("`"))
        self._held = text[len(text) - backticks :]
        if not self._in_fence:
            kept.append(text[: len(text) - backticks])
        return "".join(kept)
