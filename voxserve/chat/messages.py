"""The JSON messages a chat client sends (docs/chat.md), each field checked and bounded before the
session acts on it: what a session keeps (its history, its characters) it reads again before
every turn, so one bad value let in would fail every turn after it."""

from __future__ import annotations

import json
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError

from voxserve.chat.characters import Character, SpeakerPolicy, text_field
from voxserve.errors import InvalidRequestError

MAX_FRAME_CHARS = 256 * 1024
"""The longest text frame: eight characters of the longest persona fit in a fraction of it."""
MAX_TEXT_CHARS = 4000
"""The longest typed message: about what the embedded LLM reads in a quarter of its context."""
MAX_CHARACTERS = 8
MAX_PLAYED_MS = 24 * 3600 * 1000
MAX_GENERATION = 2**32 - 1  # audio frames carry it as an unsigned 32-bit integer

# Strict, like a character's fields: a generation of "3" or of true is a client's mistake to hear
# about, not to guess at.
PlayedMs = Annotated[float, Strict(), Field(ge=0, le=MAX_PLAYED_MS, allow_inf_nan=False)]
Generation = Annotated[int, Strict(), Field(ge=0, le=MAX_GENERATION)]


class _Message(BaseModel):
    # Fields a message does not know are ignored, for clients newer than the server.
    model_config = ConfigDict(frozen=True, extra="ignore")


class StartListening(_Message):
    type: Literal["start_listening"]


class StopListening(_Message):
    type: Literal["stop_listening"]


class TypedText(_Message):
    type: Literal["text"]
    text: text_field(MAX_TEXT_CHARS, blank=False)


class Interrupt(_Message):
    type: Literal["interrupt"]
    played_ms: PlayedMs | None = None


class PlaybackStarted(_Message):
    type: Literal["playback_started"]
    generation: Generation | None = None


class PlaybackFinished(_Message):
    type: Literal["playback_finished"]
    generation: Generation | None = None
    played_ms: PlayedMs | None = None


class SetCharacters(_Message):
    type: Literal["set_characters"]
    characters: list[Character] = Field(min_length=1, max_length=MAX_CHARACTERS)
    policy: SpeakerPolicy | None = None
    """None: the policy stays as it is."""


class Reset(_Message):
    type: Literal["reset"]


class Resume(_Message):
    type: Literal["resume"]
    conversation_id: Annotated[str, Strict(), Field(pattern=r"^[0-9a-f]{32}$")]


ClientMessage = (
    StartListening | StopListening | TypedText | Interrupt | PlaybackStarted | PlaybackFinished
    | SetCharacters | Reset | Resume
)  # fmt: skip
_MESSAGES: TypeAdapter[ClientMessage] = TypeAdapter(
    Annotated[ClientMessage, Field(discriminator="type")]
)
_TYPES = {get_args(model.model_fields["type"].annotation)[0] for model in get_args(ClientMessage)}


def parse_message(frame: str) -> ClientMessage:
    """The message in a text frame; InvalidRequestError naming the field that is wrong."""
    if len(frame) > MAX_FRAME_CHARS:
        raise InvalidRequestError(
            f"a message holds at most {MAX_FRAME_CHARS} characters, got {len(frame)}",
            code="invalid_message",
        )
    try:
        data = json.loads(frame)
    except json.JSONDecodeError as error:
        raise InvalidRequestError(f"not valid JSON: {error.msg}", code="invalid_message") from None
    if not isinstance(data, dict):
        raise InvalidRequestError('a message is a JSON object with a "type"',
                                  code="invalid_message")  # fmt: skip
    kind = data.get("type")
    if kind not in _TYPES:
        raise InvalidRequestError(f"unknown message type {kind!r}", param="type",
                                  code="unknown_type")  # fmt: skip
    try:
        return _MESSAGES.validate_python(data)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"][1:]) or None  # [0]: the type
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidRequestError(
            f"{param}: {message}" if param else message,
            param=param,
            code="invalid_message",
        ) from None
