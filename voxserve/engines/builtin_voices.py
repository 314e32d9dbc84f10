"""The built-in voices: six speakers every installation has, whatever engines it runs.

Each is a speaker description, for engines that create a voice from words (Higgs Audio), and a
concrete rendering per engine that has fixed voices. The embedded Piper engine has one neural voice,
``joe`` (median F0 about 94 Hz), so its renderings move joe's pitch and timbre apart: medians spaced
at least 20% from each other, formants raised 12-20% for the female voices and lowered for the deep
male, and a wider or narrower pitch range for energetic and soft speech.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Rendering:
    """How one engine speaks a built-in voice: one of its own voices, transformed if need be."""

    voice: str
    """The engine's voice to start from."""
    pitch_median: float | None = None
    """Median F0 in Hz the voice is moved to; None leaves pitch and timbre alone."""
    formant_shift: float = 1.0
    """Formant frequencies times this: above 1 a shorter vocal tract (lighter), below 1 deeper."""
    pitch_range: float = 1.0
    """Spread of the intonation around the median times this: above 1 livelier, below 1 calmer."""
    speed: float = 1.0
    """Speaking rate relative to the base voice; a request's own speed multiplies it."""


@dataclass(frozen=True)
class BuiltinVoice:
    id: str
    name: str
    """Display name."""
    gender: Literal["female", "male"]
    speaker_description: str
    """For description-driven engines: who speaks, and how."""
    renderings: dict[str, Rendering] = field(default_factory=dict, hash=False)
    """Engine name -> how that engine speaks this voice."""


BUILTIN_VOICES: tuple[BuiltinVoice, ...] = (
    BuiltinVoice(
        id="professional_female",
        name="Professional (female)",
        gender="female",
        speaker_description="feminine, adult, clear and confident, measured pace, newsreader",
        renderings={
            "piper": Rendering("joe", pitch_median=182.0, formant_shift=1.15, pitch_range=1.0)
        },
    ),
    BuiltinVoice(
        id="warm_female",
        name="Warm (female)",
        gender="female",
        speaker_description="feminine, adult, low and warm, friendly, conversational",
        renderings={
            "piper": Rendering("joe", pitch_median=150.0, formant_shift=1.12, pitch_range=1.1)
        },
    ),
    BuiltinVoice(
        id="storyteller_male",
        name="Storyteller (male)",
        gender="male",
        speaker_description="masculine, middle-aged, rich and expressive, unhurried, storyteller",
        renderings={
            "piper": Rendering(
                "joe", pitch_median=100.0, formant_shift=0.96, pitch_range=1.3, speed=0.95
            )
        },
    ),
    BuiltinVoice(
        id="deep_male",
        name="Deep (male)",
        gender="male",
        speaker_description="masculine, adult, very deep and resonant, calm, authoritative",
        renderings={
            "piper": Rendering("joe", pitch_median=76.0, formant_shift=0.9, pitch_range=0.9)
        },
    ),
    BuiltinVoice(
        id="energetic_female",
        name="Energetic (female)",
        gender="female",
        speaker_description="feminine, young adult, bright and upbeat, lively intonation, quick",
        renderings={
            "piper": Rendering(
                "joe", pitch_median=268.0, formant_shift=1.2, pitch_range=1.4, speed=1.05
            )
        },
    ),
    BuiltinVoice(
        id="soft_female",
        name="Soft (female)",
        gender="female",
        speaker_description="feminine, young adult, soft and gentle, calm, even intonation",
        renderings={
            "piper": Rendering("joe", pitch_median=221.0, formant_shift=1.16, pitch_range=0.75)
        },
    ),
)

_BY_ID = {voice.id: voice for voice in BUILTIN_VOICES}


def builtin_voice(voice_id: str) -> BuiltinVoice | None:
    """The built-in voice with this id, or None."""
    return _BY_ID.get(voice_id)
