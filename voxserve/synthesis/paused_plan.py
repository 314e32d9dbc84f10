"""A plan built run by run, with pauses written between the runs: the pause tags of plain text
(``[pause:1.5s]``) and SSML's breaks, sentences, paragraphs and changes of voice or rate.

A written pause replaces the pause the planner would have put there (the sentence pause after
"Hello."), and pauses written one after another add up; the end of an SSML sentence or
paragraph only lengthens the pause to its own. A pause written before anything is spoken is
the first segment's ``pause_before``; every other silence is a pause after a segment.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from voxserve.engines.base import Engine, Segment, Voicing
from voxserve.synthesis.plan import PlanOptions, plan_segments
from voxserve.text import normalize_for
from voxserve.text.pauses import split_pauses

# A run that stops without punctuation ("Hello" before a change of rate) goes straight on into
# the next one, as in the sentence it is part of: no planner pause after it.
_PAUSING_END = re.compile(r"[.!?;:,\u2026][\"')\]]*\s*$")


class PausedPlan:
    """Segments numbered through every run, from ``first_index``."""

    def __init__(self, options_for: Callable[[Engine], PlanOptions], first_index: int = 0):
        self.options_for = options_for
        self.first_index = first_index
        self.segments: list[Segment] = []
        self._written = False  # the pause after the last segment was written (a tag, a break)
        self._open_end = False  # the last run stopped without punctuation
        self._leading = 0.0  # written pauses before the first segment

    def add(self, text: str, voicing: Voicing) -> None:
        """A run of text, normalized already (or to be spoken as written)."""
        options = self.options_for(voicing.engine)
        if self.segments:  # only a plan's very first fragment is kept small
            options = replace(options, small_first=False)
        first = self.first_index + len(self.segments)
        planned = plan_segments(text, voicing, options, first_index=first, final=False)
        if not planned:
            return
        if self.segments and self._open_end and not self._written:
            self.segments[-1] = replace(self.segments[-1], pause_after=0.0)
        if not self.segments and self._leading:
            planned[0] = replace(planned[0], pause_before=self._leading)
        self.segments.extend(planned)
        self._written = False
        self._open_end = _PAUSING_END.search(text) is None

    def pause(self, seconds: float, *, written: bool = True) -> None:
        """A pause after what came so far: ``written`` (a tag, a break) replaces the planner's
        and adds to other written ones; otherwise (the end of an SSML sentence) it is at least
        ``seconds``."""
        if not self.segments:
            self._leading += seconds if written else 0.0
            return
        last = self.segments[-1]
        if written:
            seconds = last.pause_after + seconds if self._written else seconds
            self._written = True
        elif self._written:
            return
        else:
            seconds = max(last.pause_after, seconds)
        self.segments[-1] = replace(last, pause_after=seconds)

    def finish(self, *, final: bool = True) -> list[Segment]:
        """The segments; ``final``: nothing follows, so the planner's last pause is dropped
        (a written one is kept: the silence was asked for). Each segment's neighbours are those
        of the whole plan, across runs."""
        segments = self.segments
        if final and segments and not self._written:
            segments[-1] = replace(segments[-1], pause_after=0.0)
        texts = ["", *(segment.text for segment in segments), ""]
        return [
            replace(segment, neighbours=(texts[place], texts[place + 2]))
            for place, segment in enumerate(segments)
        ]


def plan_paused_text(
    text: str,
    voicing: Voicing,
    options: PlanOptions,
    *,
    normalize: bool,
    first_index: int = 0,
    final: bool = True,
    param: str = "input",
) -> list[Segment]:
    """``plan_text`` for a text that may hold pause tags: each piece between them normalized
    on its own (the tags never reach the normalizer, nor an engine), the pauses between. A tag
    that is not a duration up to ``MAX_PAUSE_SECONDS`` is a 400 naming ``param``."""
    plan = PausedPlan(lambda _: options, first_index)
    for piece in split_pauses(text, param):
        if isinstance(piece, float):
            plan.pause(piece)
        else:
            plan.add(normalize_for(piece, voicing.language) if normalize else piece, voicing)
    return plan.finish(final=final)
