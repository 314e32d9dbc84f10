"""Multi-speaker dialogue: turns -> one voice each -> one plan -> one audio stream, with
per-turn timings.

The turns become one plan of segments, each with its speaker's voicing: the synthesizer renders
it as any request, admitted once on each engine it uses, looking ahead across turns (the next
speaker's first sentence is made while this one's last is sent).

A speaker takes, in order: the voice given on its turn, the voice profile of its name
(case-insensitive), the request's mapping, else a built-in voice no other speaker has. The narrator
(turns without a speaker) speaks in the request's voice. Turns may use different engines; all are
resampled to one rate.

On one engine that speaks a whole cast (``Capabilities.multi_speaker``: Higgs), the turns become
one conversation: each carries the cast (every speaker's reference clip or description, from its
voice profile or voice), its speaker's ``[SPEAKERn]`` tag, and one context id, so that each turn
hears the turns before it instead of starting cold.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from voxserve.audio import silence
from voxserve.audio.frames import AudioChunk
from voxserve.config import Settings
from voxserve.engines.base import SpeakerPrompt, Voicing
from voxserve.engines.builtin_voices import builtin_voice
from voxserve.errors import InvalidRequestError
from voxserve.request import DialogueRequest, SpeechOptions
from voxserve.synthesis.paused_plan import plan_paused_text
from voxserve.synthesis.plan import Segment
from voxserve.synthesis.synthesizer import (
    NOTHING_TO_SAY_SECONDS,
    ProgressCallback,
    Synthesizer,
    check_spoken_length,
    iterate,
)
from voxserve.text.dialogue import NARRATOR, Turn


@dataclass(frozen=True)
class TurnTiming:
    """Where a turn sits in the dialogue's audio."""

    index: int
    speaker: str
    voice: str
    start: float
    end: float

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "speaker": self.speaker,
            "voice": self.voice,
            "start_ms": round(self.start * 1000),
            "end_ms": round(self.end * 1000),
        }


@dataclass(frozen=True)
class PreparedDialogue:
    turns: list[tuple[Turn, Voicing]]
    sample_rate: int
    pause: float
    response_format: str
    characters: int
    plans: list[list[Segment]]
    """Each turn's segments, normalized and planned before any audio is made: numbered through
    the whole dialogue, a turn's last one followed by the pause between turns."""
    tags: dict[str, str] = field(default_factory=dict)
    """Speaker -> ``SPEAKERn``, when one engine speaks the whole cast."""

    @property
    def ignored(self) -> tuple[str, ...]:
        """Fields the request sent that an engine of its turns accepts without honouring."""
        return tuple(sorted({name for _, voicing in self.turns for name in voicing.ignored}))


def prepare_dialogue(synthesizer: Synthesizer, request: DialogueRequest) -> PreparedDialogue:
    """Check every turn's voice and engine, and plan its text, before any audio is made.
    Blocking (profile lookups, normalizing up to ``max_dialogue_chars``): servers call it in a
    thread."""
    characters = sum(len(turn.text) for turn in request.turns)
    if characters > synthesizer.settings.max_dialogue_chars:
        raise InvalidRequestError(
            f"the dialogue has {characters} characters; the maximum is "
            f"{synthesizer.settings.max_dialogue_chars}",
            param="turns",
            code="input_too_long",
        )
    voices = assign_voices(synthesizer, request)
    prepared, rate = [], request.sample_rate
    for number, turn in enumerate(request.turns):
        options = request.model_copy(update={"voice": turn.voice or voices[turn.speaker]})
        try:
            voicing = synthesizer.resolver.voicing(
                SpeechOptions.model_validate(options.model_dump()), text=turn.text
            )
        except InvalidRequestError as error:
            who = repr(turn.speaker) if turn.speaker else "the narrator"
            raise InvalidRequestError(
                f"turn {number + 1} ({who}): {error.message}", param=f"turns.{number}.voice",
                code=error.code,
            ) from error  # fmt: skip
        rate = rate or voicing.sample_rate
        prepared.append((Turn(turn.speaker, turn.text), voicing))
    # Words asked of an engine that times none are aligned to its audio, as in a speech request.
    timed = request.wants_words
    turns = [(turn, replace(voicing, sample_rate=rate, timed_words=voicing.timed_words or timed))
             for turn, voicing in prepared]  # fmt: skip
    turns, tags = _as_one_cast(turns)
    plans: list[list[Segment]] = []
    for number, (turn, voicing) in enumerate(turns):
        first = sum(len(plan) for plan in plans)
        plan = _plan_turn(synthesizer, turn, voicing, request.normalize, tags, first)
        if plan and number < len(turns) - 1:
            plan[-1] = replace(plan[-1], pause_after=request.pause_between_turns)
        plans.append(plan)
    _check_spoken_length(synthesizer.settings, plans)
    return PreparedDialogue(
        turns, rate, request.pause_between_turns, request.response_format, characters, plans, tags
    )


def _plan_turn(
    synthesizer: Synthesizer,
    turn: Turn,
    voicing: Voicing,
    normalize: bool,
    tags: dict[str, str],
    first_index: int,
) -> list[Segment]:
    options = synthesizer.plan_options(voicing.engine)
    segments = plan_paused_text(
        turn.text, voicing, options, normalize=normalize, first_index=first_index, param="turns"
    )
    if tag := tags.get(turn.speaker):
        segments = [replace(s, text=f"[{tag}] {s.text}") for s in segments]
    return segments


def _check_spoken_length(settings: Settings, plans: list[list[Segment]]) -> None:
    """A dialogue may read as long as its characters allow, by the same ratio as a speech
    request."""
    spoken = sum(len(segment.text) for plan in plans for segment in plan)
    limit = settings.max_dialogue_chars * settings.max_spoken_chars // settings.max_input_chars
    check_spoken_length(spoken, limit, "turns", "the dialogue")


def _as_one_cast(
    turns: list[tuple[Turn, Voicing]],
) -> tuple[list[tuple[Turn, Voicing]], dict[str, str]]:
    """The turns as one conversation, when one engine that speaks a cast has them all."""
    engine = turns[0][1].engine
    if not engine.capabilities.multi_speaker or any(v.engine is not engine for _, v in turns):
        return turns, {}
    tags: dict[str, str] = {}
    cast: list[SpeakerPrompt] = []
    for turn, voicing in turns:
        if turn.speaker in tags:
            continue
        tags[turn.speaker] = tag = f"SPEAKER{len(tags)}"
        options, builtin = voicing.options, builtin_voice(voicing.voice.id)
        description = options.speaker_description or (
            builtin.speaker_description if builtin else None
        )
        reference = (options.reference_audio, options.reference_text)
        cast.append(SpeakerPrompt(tag, *reference, description))
    # One set of options for every turn (the speaker is its tag), so the engine keeps the context.
    shared = replace(
        turns[0][1].options, reference_audio=None, reference_text=None, speaker_description=None,
        speakers=tuple(cast), context_id=uuid.uuid4().hex,
    )  # fmt: skip
    return [(turn, replace(voicing, options=shared)) for turn, voicing in turns], tags


def assign_voices(synthesizer: Synthesizer, request: DialogueRequest) -> dict[str, str]:
    """A voice for each speaker named in the turns."""
    narrator = request.voice or synthesizer.settings.default_voice
    mapping = {name.lower(): voice for name, voice in request.voices.items()}
    assigned: dict[str, str] = {NARRATOR: narrator}
    for turn in request.turns:
        if turn.speaker in assigned:
            continue
        key = turn.speaker.lower()
        if synthesizer.resolver.voices.find(key) is not None:
            assigned[turn.speaker] = key
        elif key in mapping:
            assigned[turn.speaker] = mapping[key]
    pool = _distinct_voices(synthesizer, request.model)
    for turn in request.turns:
        if turn.speaker not in assigned:
            free = [voice for voice in pool if voice not in assigned.values()] or pool
            assigned[turn.speaker] = free[0]
    return assigned


def _distinct_voices(synthesizer: Synthesizer, model: str | None) -> list[str]:
    """The engine's speaker roles first (male, female, ...), then its other voices."""
    engine = synthesizer.registry.engine_for_model(model)
    roles = synthesizer.settings.speakers.get(engine.name, [])
    others = [voice.id for voice in engine.voices() if voice.id not in roles]
    return list(dict.fromkeys([*roles, *others]))


async def render_dialogue(
    synthesizer: Synthesizer, dialogue: PreparedDialogue, progress: ProgressCallback | None = None
) -> AsyncIterator[AudioChunk | TurnTiming]:
    """The dialogue's audio, each turn followed by its timing: one render of the whole plan,
    admitted once on every engine it uses, each place held to the last turn. A turn with
    nothing to say (only markup) has no audio: it is timed where it falls, as a moment."""
    segments = [segment for plan in dialogue.plans for segment in plan]
    if not segments:  # nothing to say at all: a moment of silence, as a speech request answers
        rate = dialogue.sample_rate
        yield AudioChunk(silence(NOTHING_TO_SAY_SECONDS, rate), rate)
        for index in range(len(dialogue.turns)):
            yield _timing(dialogue, index, 0.0, NOTHING_TO_SAY_SECONDS)
        return
    turn_of = {segment.index: turn for turn, plan in enumerate(dialogue.plans) for segment in plan}
    starts: dict[int, float] = {}
    untimed, end = 0, 0.0  # the first turn not yet timed; where the last spoken one ended
    rendered = synthesizer.render(
        iterate(segments),
        [voicing.engine for _, voicing in dialogue.turns],
        dialogue.sample_rate,
        total=len(segments),
        progress=progress,
    )
    async with contextlib.aclosing(rendered) as items:
        async for item in items:
            if isinstance(item, AudioChunk):
                yield item
                continue
            turn = turn_of[item.segment.index]
            start = starts.setdefault(turn, item.start)
            if item.segment is not dialogue.plans[turn][-1]:
                continue
            for silent in range(untimed, turn):  # turns with nothing to say, before this one
                yield _timing(dialogue, silent, start, start)
            end = item.speech_end
            yield _timing(dialogue, turn, start, end)
            untimed = turn + 1
    for silent in range(untimed, len(dialogue.turns)):
        yield _timing(dialogue, silent, end, end)


def _timing(dialogue: PreparedDialogue, index: int, start: float, end: float) -> TurnTiming:
    turn, voicing = dialogue.turns[index]
    return TurnTiming(index, turn.speaker, voicing.voice.id, start, end)
