"""Multi-speaker dialogue: turns -> one voice each -> one audio stream, with per-turn timings.

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
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voxserve.audio import silence
from voxserve.audio.frames import AudioChunk
from voxserve.config import Settings
from voxserve.engines.base import SpeakerPrompt
from voxserve.errors import InvalidRequestError
from voxserve.request import AudioFormat, SpeechOptions
from voxserve.synthesis.plan import Segment, plan_segments
from voxserve.synthesis.synthesizer import (
    NOTHING_TO_SAY_SECONDS,
    ProgressCallback,
    Synthesizer,
    Voicing,
    check_spoken_length,
    iterate,
    progress_report,
)
from voxserve.text import normalize_text
from voxserve.text.dialogue import NARRATOR, Turn
from voxserve.text.speakable import drop_control_characters, has_something_to_say
from voxserve.voices.builtin import builtin_voice


class DialogueTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speaker: str = ""
    text: str = Field(min_length=1)
    voice: str | None = None

    @field_validator("text")
    @classmethod
    def _something_to_say(cls, value: str) -> str:
        value = drop_control_characters(value)
        if not has_something_to_say(value):
            raise ValueError("the turn has nothing to say (no letter or digit)")
        return value


class DialogueRequest(SpeechOptions):
    """``POST /v1/audio/dialogue``: turns, each spoken in its speaker's voice."""

    turns: list[DialogueTurn] = Field(min_length=1, max_length=2000)
    voices: dict[str, str] = Field(default_factory=dict)
    """Speaker name -> voice, for speakers without a profile of their name."""
    pause_between_turns: float = Field(0.4, ge=0.0, le=5.0)
    response_format: AudioFormat = "mp3"
    stream_format: str = Field("audio", pattern="^(audio|sse)$")


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
    """Each turn's segments, normalized and planned before any audio is made."""
    tags: dict[str, str] = field(default_factory=dict)
    """Speaker -> ``SPEAKERn``, when one engine speaks the whole cast."""


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
            voicing = synthesizer.voicing(SpeechOptions.model_validate(options.model_dump()))
        except InvalidRequestError as error:
            who = repr(turn.speaker) if turn.speaker else "the narrator"
            raise InvalidRequestError(
                f"turn {number + 1} ({who}): {error.message}", param=f"turns.{number}.voice",
                code=error.code,
            ) from error  # fmt: skip
        rate = rate or voicing.sample_rate
        prepared.append((Turn(turn.speaker, turn.text), voicing))
    turns = [(turn, replace(voicing, sample_rate=rate)) for turn, voicing in prepared]
    turns, tags = _as_one_cast(turns)
    plans = [
        _plan_turn(synthesizer, turn, voicing, request.normalize, tags) for turn, voicing in turns
    ]
    _check_spoken_length(synthesizer.settings, plans)
    return PreparedDialogue(
        turns, rate, request.pause_between_turns, request.response_format, characters, plans, tags
    )


def _plan_turn(
    synthesizer: Synthesizer, turn: Turn, voicing: Voicing, normalize: bool, tags: dict[str, str]
) -> list[Segment]:
    text = normalize_text(turn.text) if normalize else turn.text
    segments = plan_segments(text, voicing.voice.id, synthesizer.plan_options(voicing.engine))
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
        if synthesizer.voices.find(key) is not None:
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
    """The dialogue's audio, each turn followed by its timing. Every engine it uses admits it
    once, before its first audio, and holds its place to the last turn."""
    position, started = 0.0, time.monotonic()
    planned = zip(dialogue.turns, dialogue.plans, strict=True)
    engines = [voicing.engine for _, voicing in dialogue.turns]
    async with synthesizer.admit(engines) as admitted:
        for index, ((turn, voicing), segments) in enumerate(planned):
            if index and dialogue.pause:
                yield AudioChunk(
                    silence(dialogue.pause, dialogue.sample_rate), dialogue.sample_rate
                )
                position += dialogue.pause
            start = position
            if segments:
                rendered = synthesizer.render(
                    voicing, iterate(segments), admitted=admitted[voicing.engine.name]
                )
            else:  # only markup or code ("`x`"): a moment of silence, as a speech request answers
                rendered = _nothing_to_say(dialogue.sample_rate)
            async with contextlib.aclosing(rendered) as items:
                async for item in items:
                    if isinstance(item, AudioChunk):
                        position += item.duration
                        yield item
            yield TurnTiming(index, turn.speaker, voicing.voice.id, start, position)
            if progress is not None:
                progress(progress_report(index + 1, len(dialogue.turns), position, started))


async def _nothing_to_say(sample_rate: int) -> AsyncIterator[AudioChunk]:
    yield AudioChunk(silence(NOTHING_TO_SAY_SECONDS, sample_rate), sample_rate)
