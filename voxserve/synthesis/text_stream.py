"""Text that arrives in pieces (an LLM's tokens) -> segments, each sentence once it is complete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from voxserve.engines.base import Voicing
from voxserve.synthesis.paused_plan import plan_paused_text
from voxserve.synthesis.plan import PlanOptions, Segment
from voxserve.text import SentenceBuffer

FENCE = "```"


class TextStream:
    """Feed text with ``push``; ``segments()`` yields what is ready to synthesize, in order.

    Fenced code blocks are dropped as they stream past (the whole-text normalizer cannot see a
    fence that opened in an earlier sentence). Only the very first fragment is kept small, and it
    goes as soon as it is complete: a reply's opening clause ("Well,") is released before the rest
    of its sentence has arrived, which is most of a voice chat's time to first audio.

    ``push``, ``flush`` and ``end`` do the text work (splitting, normalizing, planning) where they
    are called: fine for an LLM's tokens. Text from a client, whose pieces may be large, goes
    through the ``..._in_thread`` forms, which do that work in a worker thread so that no other
    client waits on it; each must be awaited before the next step is taken.
    """

    def __init__(
        self,
        voicing: Voicing,
        plan: PlanOptions,
        *,
        normalize: bool = True,
        voicing_for: Callable[[Voicing, str], Voicing] | None = None,
    ):
        self.voicing = voicing
        self.voicing_for = voicing_for
        """The voicing of each sentence as it comes (``VoiceResolver.for_text``: its language
        detected); None: ``voicing`` for all."""
        self.plan = plan
        self.normalize = normalize
        self._sentences = SentenceBuffer()
        self._segments: asyncio.Queue[Segment | None] = asyncio.Queue()
        self.released: list[Segment] = []
        """Every segment handed to synthesis so far, in order."""
        self._planned = 0  # segments planned: what the next index is, and whether one was small
        self._in_fence = False
        self._held = ""  # a possible fence still arriving: "`" or "``"
        self.ended = False

    def push(self, text: str) -> None:
        self._release(self._push(text))

    def flush(self) -> None:
        self._release(self._flush())

    def end(self) -> None:
        """No more text: what is buffered is spoken, then ``segments()`` finishes."""
        if not self.ended:
            self._release(self._end())
            self.close()

    async def push_in_thread(self, text: str) -> None:
        await self._in_thread(self._push, text)

    async def flush_in_thread(self) -> None:
        await self._in_thread(self._flush)

    async def end_in_thread(self) -> None:
        if not self.ended:
            await self._in_thread(self._end)
            self.close()

    def close(self) -> None:
        """Stop here: buffered text is dropped (not even planned), and ``segments()`` finishes."""
        if not self.ended:
            self.ended = True
            self._segments.put_nowait(None)

    async def segments(self) -> AsyncIterator[Segment]:
        while (segment := await self._segments.get()) is not None:
            yield segment

    async def _in_thread(self, step: Callable[..., list[Segment]], *args: str) -> None:
        # The segments are queued here, on the loop: asyncio's queue is not thread-safe.
        self._release(await asyncio.to_thread(step, *args))

    def _release(self, segments: list[Segment]) -> None:
        if self.ended:
            return  # closed while these were planned: nobody wants them
        for segment in segments:
            self._segments.put_nowait(segment)
            self.released.append(segment)

    # The text work: these touch only the buffers and the plan, so they may run in a thread.

    def _push(self, text: str) -> list[Segment]:
        sentences = self._sentences.push(self._drop_code(text))
        if not sentences and not self._planned and self.plan.small_first:
            opening = self._sentences.take_opening_clause()
            sentences = [opening] if opening else []
        return self._plan(sentences)

    def _flush(self) -> list[Segment]:
        return self._plan(self._sentences.flush())

    def _end(self) -> list[Segment]:
        held = [] if self._in_fence else self._plan(self._sentences.push(self._held))
        return held + self._flush()

    def _plan(self, sentences: list[str]) -> list[Segment]:
        planned: list[Segment] = []
        for sentence in sentences:
            voicing = self.voicing_for(self.voicing, sentence) if self.voicing_for else self.voicing
            plan = self.plan if not self._planned else replace(self.plan, small_first=False)
            # Pause tags are pauses inside a sentence; one that opens a sentence would follow
            # a segment already released, so it is only taken out.
            segments = plan_paused_text(
                sentence, voicing, plan, normalize=self.normalize, first_index=self._planned,
                final=False,
            )  # fmt: skip
            self._planned += len(segments)
            planned.extend(segments)
        return planned

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
