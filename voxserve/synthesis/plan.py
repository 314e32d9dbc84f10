"""Text -> the ordered segments one request synthesizes, each with the voicing that speaks it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from voxserve.config import Settings
from voxserve.engines.base import Engine, Segment, Voicing
from voxserve.text import plan_fragments
from voxserve.text.speakable import drop_control_characters, has_something_to_say

__all__ = ["PlanOptions", "Segment", "plan_options", "plan_segments"]


@dataclass(frozen=True)
class PlanOptions:
    max_chars: int
    sentence_pause: float
    clause_pause: float
    small_first: bool


def plan_options(settings: Settings, engine: Engine) -> PlanOptions:
    return PlanOptions(
        max_chars=engine.capabilities.chunk_chars,
        sentence_pause=settings.sentence_pause,
        clause_pause=settings.clause_pause,
        small_first=settings.first_fragment_small,
    )


def plan_segments(
    text: str, voicing: Voicing, options: PlanOptions, *, first_index: int = 0, final: bool = True
) -> list[Segment]:
    """Segments for ``text``, each with something to say; ``final`` means nothing follows it, so
    its last pause is dropped."""
    # Even a one-word opening clause ("Sure,", "Well,") is worth sending first: a natural pause
    # follows it, and it halves the time to first audio of a typical reply (bench/core.py).
    # Whatever way the text came (a request, a dialogue turn, pushed pieces, normalized or not),
    # no control character reaches an engine: a NUL failed Piper's phonemizer.
    fragments = plan_fragments(
        drop_control_characters(text),
        options.max_chars,
        small_first=options.small_first,
        first_min_words=1,
    )
    segments: list[Segment] = []
    for fragment in fragments:
        pause = options.sentence_pause if fragment.ends_sentence else options.clause_pause
        if not has_something_to_say(fragment.text):
            # "!!!", "⁂." or emoji between sentences: an engine makes no audio of them, which
            # would fail a stream already under way. The pause they stand for is kept.
            if segments:
                last = segments[-1]
                segments[-1] = replace(last, pause_after=max(last.pause_after, pause))
            continue
        segments.append(Segment(first_index + len(segments), fragment.text, voicing, pause))
    if final and segments:
        segments[-1] = replace(segments[-1], pause_after=0.0)
    texts = ["", *(segment.text for segment in segments), ""]
    return [
        replace(segment, neighbours=(texts[place], texts[place + 2]))
        for place, segment in enumerate(segments)
    ]
