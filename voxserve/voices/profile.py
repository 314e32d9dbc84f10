"""A voice profile's fields and their checks: what a row of the voice store holds."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voxserve.errors import InvalidRequestError

NAME = r"[a-z0-9][a-z0-9_-]{0,63}"
NAME_PATTERN = re.compile(rf"^{NAME}$")


def check_name(name: str) -> str:
    """A profile id: a safe slug, never a path."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequestError(
            f"invalid voice name {name!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (no spaces, slashes or dots)",
            param="name",
            code="invalid_name",
        )
    return name


class VoiceDefaults(BaseModel):
    """Synthesis parameters a profile brings; None: the engine's own."""

    model_config = ConfigDict(extra="forbid")

    speed: float | None = Field(None, ge=0.25, le=4.0)
    temperature: float | None = Field(None, gt=0.0, le=2.0)  # as a request's: 0 is no sampling
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    seed: int | None = None


class VoiceProfile(BaseModel):
    """A voice of the user's own."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    id: str
    display_name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=2000)
    tags: list[str] = Field(default_factory=list, max_length=32)
    language: str | None = Field(None, max_length=35)
    engine: str | None = None
    """Preferred engine; None: the default engine."""
    voice: str | None = None
    """The engine voice to use when not cloning (e.g. a built-in such as warm_female)."""
    transcript: str | None = Field(None, max_length=5000)
    """What the reference audio says (cloning engines need it)."""
    speaker_description: str | None = Field(None, max_length=1000)
    """For description-driven engines, e.g. "feminine, young adult, warm, conversational"."""
    scene_prompt: str | None = Field(None, max_length=2000)
    defaults: VoiceDefaults = Field(default_factory=VoiceDefaults)
    engine_options: dict[str, Any] = Field(default_factory=dict)
    """The engine's own options for this voice (ElevenLabs' voice settings...), checked against
    the engine's ``Options`` when the voice speaks; a request's own override them one by one."""
    has_reference: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        return check_name(value)

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, tags: list[str]) -> list[str]:
        cleaned = []
        for tag in tags:
            tag = tag.strip().lower()
            if not tag or len(tag) > 32:
                raise ValueError("each tag has 1-32 characters")
            if tag not in cleaned:
                cleaned.append(tag)
        return cleaned


UPDATABLE_FIELDS = set(VoiceProfile.model_fields) - {
    "id",
    "has_reference",
    "created_at",
    "updated_at",
}
