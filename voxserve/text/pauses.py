"""Pauses written into plain text (``[pause:1.5s]``, ``[pause:500ms]``), and the durations they
and SSML's ``<break time>`` share.

A tag is taken out of the text before anything else sees it: the normalizer would otherwise read
"[pause:1.5s]" as "pause one point five s". What is left either side is spoken as usual, with
the pause between.
"""

from __future__ import annotations

import re

from voxserve.errors import InvalidRequestError

MAX_PAUSE_SECONDS = 10.0
"""The longest pause one tag or break may ask for: longer ones are a mistake (or a way to hold a
stream place for nothing), and several in a row still add up."""

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s)\s*", re.IGNORECASE)
PAUSE_TAG = re.compile(r"\[pause:([^\]\n]{0,40})\]", re.IGNORECASE)
"""A pause tag; its inside is read by ``parse_duration`` (a malformed one is refused, not
spoken)."""


def parse_duration(written: str, param: str, what: str) -> float:
    """``"1.5s"`` or ``"500ms"`` as seconds, at most ``MAX_PAUSE_SECONDS``; anything else is a
    400 naming ``param``, its message starting with ``what`` (where it was written)."""
    match = _DURATION.fullmatch(written)
    if match is None:
        raise InvalidRequestError(
            f"{what}: {written!r} is not a duration such as 500ms or 1.5s", param=param
        )
    seconds = float(match[1]) / (1000 if match[2].lower() == "ms" else 1)
    if seconds > MAX_PAUSE_SECONDS:
        raise InvalidRequestError(
            f"{what}: a pause of {seconds:g} s is longer than the maximum, {MAX_PAUSE_SECONDS:g} s",
            param=param,
        )
    return seconds


def split_pauses(text: str, param: str = "input") -> list[str | float]:
    """``text`` as its pieces of text and, between them, the seconds of each pause tag, in
    order; a text without tags is ``[text]``."""
    pieces: list[str | float] = []
    at = 0
    for match in PAUSE_TAG.finditer(text):
        pieces.append(text[at : match.start()])
        pieces.append(parse_duration(match[1], param, f"the tag {match[0]}"))
        at = match.end()
    pieces.append(text[at:])
    return [piece for piece in pieces if piece != ""]
