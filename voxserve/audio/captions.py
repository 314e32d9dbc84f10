"""Caption files from timed words: SubRip (SRT), WebVTT, and a JSON document of words and
sentences.

Cues follow the broadcast subtitle rules most guides share (the BBC's, Netflix's timed-text
style guide): at most ``MAX_LINE_CHARS`` (42) characters a line, ``MAX_LINES`` (2) lines and
``MAX_CUE_SECONDS`` (7 s) a cue, and a sentence's end always ends its cue, so a cue never
straddles two sentences. Words are packed greedily into a cue until the next one would break a
rule; a cue of two lines is broken where its lines come out most even (a short line over a long
one reads worse). A single word longer than a line gets a cue of its own, over-long.

A sentence ends at a word ending in ``.``, ``!``, ``?`` or ``…`` (quotes and brackets after it
allowed): words keep their punctuation as written, so the words alone say where the text's
sentences end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from voxserve.audio.frames import WordTiming
from voxserve.errors import InvalidRequestError

CAPTION_FORMATS = ("srt", "vtt", "json")
MAX_LINE_CHARS = 42
MAX_LINES = 2
MAX_CUE_SECONDS = 7.0

_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]»]*$")


@dataclass(frozen=True)
class Cue:
    """One caption on screen: its lines, from ``start`` to ``end`` seconds."""

    start: float
    end: float
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Sentence:
    text: str
    start: float
    end: float


def ends_sentence(word: str) -> bool:
    return bool(_SENTENCE_END.search(word))


def sentences(words: Sequence[WordTiming]) -> list[Sentence]:
    """The words grouped into their sentences, each timed from its first word to its last."""
    found: list[Sentence] = []
    current: list[WordTiming] = []
    for word in words:
        current.append(word)
        if ends_sentence(word.text):
            found.append(_sentence(current))
            current = []
    if current:
        found.append(_sentence(current))
    return found


def cues(words: Sequence[WordTiming]) -> list[Cue]:
    """The words as cues, by the rules above."""
    made: list[Cue] = []
    current: list[WordTiming] = []
    for word in words:
        if current and not _fits([*current, word]):
            made.append(_cue(current))
            current = []
        current.append(word)
        if ends_sentence(word.text):
            made.append(_cue(current))
            current = []
    if current:
        made.append(_cue(current))
    return made


def to_srt(words: Sequence[WordTiming]) -> str:
    blocks = [
        f"{number}\n{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}\n"
        + "\n".join(cue.lines)
        for number, cue in enumerate(cues(words), 1)
    ]
    return "".join(f"{block}\n\n" for block in blocks)


def to_vtt(words: Sequence[WordTiming]) -> str:
    blocks = [
        f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}\n"
        + "\n".join(_vtt_text(line) for line in cue.lines)
        for cue in cues(words)
    ]
    return "WEBVTT\n\n" + "".join(f"{block}\n\n" for block in blocks)


def to_json(words: Sequence[WordTiming]) -> str:
    """``{"words": [{"word", "start", "end"}], "sentences": [{"text", "start", "end"}]}``."""
    document = {
        "words": [word.to_dict() for word in words],
        "sentences": [
            {"text": s.text, "start": round(s.start, 3), "end": round(s.end, 3)}
            for s in sentences(words)
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def render_captions(words: Sequence[WordTiming], caption_format: str) -> str:
    """The caption file of ``words`` in one of CAPTION_FORMATS."""
    writers = {"srt": to_srt, "vtt": to_vtt, "json": to_json}
    return writers[caption_format](words)


def caption_format_for_path(path: str | Path, param: str = "captions") -> str:
    """A captions file's format from its extension; anything else is refused, naming
    ``param``, before any audio is made."""
    suffix = Path(path).suffix.lower().removeprefix(".")
    if suffix not in CAPTION_FORMATS:
        raise InvalidRequestError(
            f"{param}: {str(path)!r} is not a captions file: name it .srt, .vtt or .json",
            param=param,
        )
    return suffix


def _fits(words: Sequence[WordTiming]) -> bool:
    if words[-1].end - words[0].start > MAX_CUE_SECONDS:
        return False
    return _lines([word.text for word in words]) is not None


def _lines(texts: Sequence[str]) -> tuple[str, ...] | None:
    """The words on one line, else on two broken where they are most even; None if they do
    not fit in two."""
    whole = " ".join(texts)
    if len(whole) <= MAX_LINE_CHARS:
        return (whole,)
    splits = [(" ".join(texts[:at]), " ".join(texts[at:])) for at in range(1, len(texts))]
    fitting = [lines for lines in splits if max(map(len, lines)) <= MAX_LINE_CHARS]
    if not fitting:
        return None
    return min(fitting, key=lambda lines: max(map(len, lines)))


def _cue(words: Sequence[WordTiming]) -> Cue:
    texts = [word.text for word in words]
    lines = _lines(texts) or (" ".join(texts),)  # one word longer than a line: as it is
    return Cue(words[0].start, max(words[-1].end, words[0].start), lines)


def _sentence(words: Sequence[WordTiming]) -> Sentence:
    return Sentence(" ".join(word.text for word in words), words[0].start, words[-1].end)


def _timestamp(seconds: float, decimal_mark: str) -> str:
    """``HH:MM:SS,mmm`` (SRT) or ``HH:MM:SS.mmm`` (WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{decimal_mark}{millis:03d}"


def _vtt_text(line: str) -> str:
    """WebVTT cue text is markup: ``&`` and ``<`` escaped, and ``-->`` cannot appear."""
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
