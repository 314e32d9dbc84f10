"""Characters in a voice chat: who they are, what the LLM sees for one, and who speaks next.

Several characters can share one chat with the user. Each is answered by the LLM separately, with
its own persona as the system prompt; the history it sees keeps every speaker's name, so a
character knows who said what ("the history keeps speaker names").
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, Field, Strict
from pydantic.dataclasses import dataclass as checked_dataclass

from voxserve.errors import InvalidRequestError

USER = "user"
"""The speaker name of the person in the chat."""

SpeakerPolicy = Literal["round_robin", "first", "random"]
SPEAKER_POLICIES: tuple[str, ...] = get_args(SpeakerPolicy)

MAX_NAME_CHARS = 64
MAX_VOICE_CHARS = 256
MAX_PERSONA_CHARS = 4000
"""A persona is a system prompt read before every reply: the embedded LLM's whole context is
2048 tokens (~8000 characters), and a persona must leave room for the conversation."""
MAX_DESCRIPTION_CHARS = 500


def plain_text(value: str) -> str:
    """``value``, if every part of the chat can carry it: no database keeps a NUL. (A lone
    surrogate, ``"\\ud800"`` in JSON, which no LLM request or database could take either, is
    refused by pydantic itself: it is no UTF-8.)"""
    if "\0" in value:
        raise ValueError("holds a NUL character")
    return value


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _not_the_user(name: str) -> str:
    if name == USER:
        raise ValueError(f"{USER!r} is the person in the chat")
    return name


def text_field(max_chars: int, *, blank: bool = True) -> Any:
    """The type of a ``str`` field of `plain_text`, at most ``max_chars`` long (checked first:
    a huge value is refused before it is read), not blank unless ``blank``. Strict: a name of 5
    is a client's mistake to hear about, not to guess at."""
    checks = [AfterValidator(plain_text)] + ([] if blank else [AfterValidator(not_blank)])
    return Annotated[str, Strict(), Field(max_length=max_chars), *checks]


@checked_dataclass(frozen=True)
class Character:
    """Checked as it is made, wherever it comes from (a client, the settings, a saved chat): a
    character that cannot be used must not get into a conversation, where every later turn
    would meet it."""

    name: Annotated[text_field(MAX_NAME_CHARS, blank=False), AfterValidator(_not_the_user)]
    """How the character is addressed and shown; unique within a chat."""
    voice: text_field(MAX_VOICE_CHARS, blank=False)
    """The voice it speaks with (a voice profile or an engine voice)."""
    persona: text_field(MAX_PERSONA_CHARS)
    """Its system prompt: who it is and how it talks."""
    description: text_field(MAX_DESCRIPTION_CHARS) = ""
    """A short line for people choosing characters; the LLM never sees it."""


@dataclass(frozen=True)
class ChatTurn:
    speaker: str
    """A character's name, or ``USER``."""
    text: str
    """What was said (for an interrupted reply: what was heard)."""


def build_messages(
    character: Character,
    history: Sequence[ChatTurn],
    *,
    max_turns: int = 40,
    others: Sequence[Character] = (),
) -> list[dict]:
    """The OpenAI chat messages that ask ``character`` for its next line.

    The persona comes first as the system message, followed by a line naming the other characters
    present (``others`` plus anyone else speaking in the history) and asking for a short reply in
    plain speakable text: the reply goes straight to a text-to-speech engine. Then the last
    ``max_turns`` turns at most (see `_window_start`): the user's as ``user``, the character's own
    as ``assistant``, other characters' as ``user`` messages prefixed with their name, so the names
    are kept.
    """
    if max_turns < 0:
        raise ValueError(f"max_turns must be 0 or more, got {max_turns}")
    recent = list(history[_window_start(len(history), max_turns) :]) if max_turns else []
    present = _names_present(character, others, history)
    system = character.persona.strip()
    instructions = _instructions(character.name, present)
    messages: list[dict] = [
        {"role": "system", "content": f"{system}\n\n{instructions}" if system else instructions}
    ]
    for turn in recent:
        text = turn.text.strip()
        if not text:
            continue
        if turn.speaker == character.name:
            messages.append({"role": "assistant", "content": text})
        elif turn.speaker == USER:
            messages.append({"role": "user", "content": text})
        else:
            messages.append({"role": "user", "content": f"{turn.speaker}: {text}"})
    return messages


def _window_start(turns: int, max_turns: int) -> int:
    """Where the turns an LLM is shown begin, once there are more than ``max_turns``.

    The oldest are let go half a window at a time, so the start stays put for many turns and the
    LLM's prompt cache (llama.cpp's, a server's) keeps what it has read: a window sliding one turn
    a turn would have it read the whole conversation again before every reply.
    """
    if turns <= max_turns:
        return 0
    step = max(1, max_turns // 2)
    return -(-(turns - max_turns) // step) * step  # rounded up to a whole step


def _names_present(
    character: Character, others: Sequence[Character], history: Sequence[ChatTurn]
) -> list[str]:
    names: list[str] = []
    for name in [other.name for other in others] + [turn.speaker for turn in history]:
        if name not in (character.name, USER) and name not in names:
            names.append(name)
    return names


def _instructions(name: str, others: list[str]) -> str:
    lines = [f"You are {name}, speaking aloud in a live voice conversation."]
    if others:
        lines.append(
            f"Also present: {', '.join(others)}. Their lines reach you prefixed with their names."
        )
    lines.append(
        f"Answer only as {name}, briefly (one to three sentences), in plain text that can be "
        "spoken: no markdown, lists, emoji or stage directions, and no name prefix."
    )
    return " ".join(lines)


def choose_next_speaker(
    characters: Sequence[Character],
    user_text: str,
    last_speaker: str | None,
    policy: SpeakerPolicy = "round_robin",
    *,
    rng: random.Random | None = None,
) -> Character:
    """Who answers the user's ``user_text``.

    A character addressed by name (case-insensitive, whole word; the earliest mention wins)
    answers. Otherwise ``policy`` decides: ``round_robin`` takes the one after ``last_speaker``
    (the first when there is none), ``first`` always the first, ``random`` any but the last
    speaker, drawn from ``rng`` (pass a seeded ``random.Random`` for repeatable choices).
    """
    if not characters:
        raise ValueError("a chat needs at least one character")
    if policy not in SPEAKER_POLICIES:
        raise InvalidRequestError(
            f"unknown speaker policy {policy!r}; choose one of {', '.join(SPEAKER_POLICIES)}",
            param="policy",
        )
    addressed = _addressed(characters, user_text)
    if addressed is not None:
        return addressed
    names = [character.name for character in characters]
    if policy == "first":
        return characters[0]
    if policy == "round_robin":
        after = names.index(last_speaker) if last_speaker in names else -1
        return characters[(after + 1) % len(characters)]
    candidates = [c for c in characters if c.name != last_speaker] or list(characters)
    return (rng or random.Random()).choice(candidates)


def _addressed(characters: Sequence[Character], text: str) -> Character | None:
    best: tuple[int, int] | None = None  # (position, -length): earliest, then longest name
    chosen = None
    for character in characters:
        name = character.name.strip()
        if not name:
            continue
        match = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE)
        if match and (best is None or (match.start(), -len(name)) < best):
            best = (match.start(), -len(name))
            chosen = character
    return chosen
