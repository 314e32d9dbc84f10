"""Dialogue scripts: one turn per line, ``Speaker|||text`` or ``[SPEAKER0] text``.

A line without a speaker continues the turn before it (or, first of all, is the narrator's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voxserve.text.speakable import has_something_to_say

DEFAULT_DELIMITER = "|||"
NARRATOR = ""
TAG = re.compile(r"^\s*\[(SPEAKER\d+)\]\s*(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Turn:
    speaker: str
    """As written in the script; "" is the narrator."""
    text: str


def is_dialogue(text: str, delimiter: str = DEFAULT_DELIMITER) -> bool:
    return any(delimiter in line or TAG.match(line) for line in text.splitlines())


def parse_dialogue(script: str, delimiter: str = DEFAULT_DELIMITER) -> list[Turn]:
    """The script's turns in order; raises ValueError naming the line that is wrong: a line
    with no speaker before the delimiter, or a turn with nothing to say (``A|||``, ``[SPEAKER0]``
    with no line after it)."""
    if not delimiter.strip():
        raise ValueError("the dialogue delimiter must not be blank")
    turns: list[Turn] = []
    starts: list[int] = []  # the line each turn starts on
    for number, line in enumerate(script.splitlines(), 1):
        if not line.strip():
            continue
        tagged = TAG.match(line)
        if tagged:
            speaker, text = tagged.group(1).upper(), tagged.group(2)
        elif delimiter in line:
            speaker, text = line.split(delimiter, 1)
            speaker = speaker.strip()
            if not speaker:
                raise ValueError(f"line {number}: no speaker before {delimiter!r}")
        elif turns:
            joined = f"{turns[-1].text}\n{line.strip()}".strip()
            turns[-1] = Turn(turns[-1].speaker, joined)
            continue
        else:
            speaker, text = NARRATOR, line
        turns.append(Turn(speaker, text.strip()))
        starts.append(number)
    for turn, number in zip(turns, starts, strict=True):
        if not has_something_to_say(turn.text):
            who = repr(turn.speaker) if turn.speaker else "the narrator"
            raise ValueError(f"line {number}: the turn of {who} has nothing to say")
    return turns
