"""A document spoken into an audiobook: each chapter in pieces of a request's size, each piece's
audio a WAV file of its own, then one book file at the target loudness (``voxserve book``).

Pieces are files in a work directory named after the document and the options (a hash), each
written under a temporary name and renamed when whole: a render stopped anywhere (Ctrl-C, a
crash) and started again with the same file and options skips the pieces already made, and
redoes at most the one it was in. The work directory is removed once the book is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxserve.audio.dsp import float_to_int16, silence
from voxserve.audio.frames import AudioChunk
from voxserve.audio.music_bed import BedMixer, MusicBed
from voxserve.longform.book_file import ChapterAudio, write_book
from voxserve.longform.chapters import Document
from voxserve.longform.loudness import LoudnessMeter, gain_db_to
from voxserve.request import DialogueRequest, SpeechOptions, SpeechRequest
from voxserve.synthesis.dialogue import assign_voices, prepare_dialogue, render_dialogue
from voxserve.synthesis.synthesizer import Synthesizer
from voxserve.text.dialogue import parse_dialogue
from voxserve.text.sentences import split_sentences

PARAGRAPH_PAUSE = 0.6
CHAPTER_PAUSE = 2.0
DEFAULT_LOUDNESS = -16.0
"""LUFS: what podcast and audiobook platforms ask for."""


@dataclass(frozen=True)
class BookProgress:
    pieces_done: int
    pieces_total: int
    chapters_done: int
    audio_seconds: float
    pieces_made: int
    """Of those done, the pieces spoken by this run (the rest a stopped run had made)."""


def pieces(text: str, max_chars: int) -> list[str]:
    """``text`` in pieces of at most ``max_chars``: whole paragraphs where they fit, else their
    sentences gathered up to the limit (a sentence longer than that alone is its own piece, and
    the planner cuts it)."""
    result: list[str] = []
    for paragraph in (line.strip() for line in text.splitlines()):
        if not paragraph:
            continue
        if len(paragraph) <= max_chars:
            result.append(paragraph)
            continue
        current = ""
        for sentence in split_sentences(paragraph):
            if current and len(current) + 1 + len(sentence) > max_chars:
                result.append(current)
                current = ""
            current = f"{current} {sentence}".strip()
        if current:
            result.append(current)
    return result


def script_pieces(text: str, max_chars: int) -> list[str]:
    """A script's turns, one a piece (as ``Speaker|||line``; the narrator's as plain text), a
    turn longer than ``max_chars`` in several, each with its speaker."""
    result = []
    for turn in parse_dialogue(text):
        prefix = f"{turn.speaker}|||" if turn.speaker else ""
        result += [prefix + part for part in pieces(turn.text, max_chars - len(prefix))]
    return result


def work_directory(root: Path, source: bytes, options: dict) -> Path:
    """Where a render of ``source`` with ``options`` keeps its pieces: the same for the same
    document and options, so a second run resumes the first."""
    digest = hashlib.sha256(source + json.dumps(options, sort_keys=True).encode()).hexdigest()
    return root / digest[:24]


async def render_book(
    synthesizer: Synthesizer,
    document: Document,
    options: SpeechOptions,
    output: Path,
    work: Path,
    *,
    file_format: str,
    loudness: float | None = DEFAULT_LOUDNESS,
    chapters_dir: Path | None = None,
    music: tuple[bytes, MusicBed] | None = None,
    progress: Callable[[BookProgress], None] | None = None,
) -> list[float]:
    """Speak ``document`` into ``output``; returns each chapter's start (seconds). ``music``:
    a music file and how it sits under the speech (the book and each chapter file)."""
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    limit = synthesizer.settings.max_input_chars
    cut = script_pieces if document.is_script else pieces
    plan = [cut(chapter.text, limit) for chapter in document.chapters]
    voices = None
    if document.is_script:  # a podcast: each speaker in the same voice all through
        voices = await asyncio.to_thread(script_voices, synthesizer, document, options)
    total = sum(len(chapter) for chapter in plan)
    done, made, audio_seconds, rate = 0, 0, 0.0, options.sample_rate
    chapters = []
    for number, (chapter, texts) in enumerate(zip(document.chapters, plan, strict=True), 1):
        files = []
        for index, text in enumerate(texts, 1):
            path = work / f"{number:04d}-{index:05d}.wav"
            pause = CHAPTER_PAUSE if index == len(texts) else PARAGRAPH_PAUSE
            if not path.exists():
                rate = await _speak_piece(synthesizer, options, text, rate, pause, path, voices)
                made += 1
            rate = rate or _rate_of(path)
            files.append(path)
            done += 1
            audio_seconds += _seconds_of(path)
            if progress is not None:
                progress(BookProgress(done, total, number - 1, audio_seconds, made))
        chapters.append(ChapterAudio(chapter.title, files))
    gain = 0.0
    if loudness is not None:
        gain = await asyncio.to_thread(_gain_to, chapters, rate, loudness)

    def write(path: Path, parts: list[ChapterAudio], title: str | None) -> list[float]:
        # In a worker thread: the music is decoded, the book encoded.
        bed = None if music is None else BedMixer(music[0], music[1], rate)
        return write_book(path, parts, file_format=file_format, sample_rate=rate, title=title,
                          author=document.author, gain_db=gain, music=bed)  # fmt: skip

    starts = await asyncio.to_thread(write, output, chapters, document.title)
    if chapters_dir is not None:
        await asyncio.to_thread(chapters_dir.mkdir, parents=True, exist_ok=True)
        for number, chapter in enumerate(chapters, 1):
            name = chapters_dir / f"{number:02d} {_file_safe(chapter.title)}.{file_format}"
            await asyncio.to_thread(write, name, [chapter], chapter.title)
    shutil.rmtree(work, ignore_errors=True)
    return starts


async def _speak_piece(
    synthesizer: Synthesizer, options: SpeechOptions, text: str, rate: int | None,
    pause: float, path: Path, script_voices: dict[str, str] | None,
) -> int:  # fmt: skip
    """Speak ``text`` (a script's lines, with ``script_voices``) into the WAV file ``path``,
    written whole or not at all; returns its rate."""
    fields = options.model_dump(exclude_none=True) | {"stream": True}
    if rate:
        fields["sample_rate"] = rate  # one rate for the whole book
    if script_voices is None:
        request = SpeechRequest.model_validate(fields | {"input": text})
        prepared = await asyncio.to_thread(synthesizer.prepare, request)
        rate, audio = prepared.sample_rate, synthesizer.stream(prepared)
    else:
        turns = [{"speaker": turn.speaker, "text": turn.text} for turn in parse_dialogue(text)]
        request = DialogueRequest.model_validate(fields | {"turns": turns, "voices": script_voices})
        dialogue = await asyncio.to_thread(prepare_dialogue, synthesizer, request)
        rate, audio = dialogue.sample_rate, render_dialogue(synthesizer, dialogue)
    temporary = path.with_suffix(".part")
    with wave.open(str(temporary), "wb") as piece:
        piece.setnchannels(1)
        piece.setsampwidth(2)
        piece.setframerate(rate)
        async with contextlib.aclosing(audio) as chunks:
            async for chunk in chunks:
                if isinstance(chunk, AudioChunk):  # a dialogue's turn timings are not kept
                    piece.writeframes(float_to_int16(chunk.samples).tobytes())
        piece.writeframes(float_to_int16(silence(pause, rate)).tobytes())
    with temporary.open("rb+") as written:
        os.fsync(written.fileno())
    os.replace(temporary, path)
    return rate


def script_voices(synthesizer: Synthesizer, document: Document, options: SpeechOptions) -> dict:
    """A voice for each speaker of a script, the same in every piece: each speaker's first
    turn decides, as in one dialogue request."""
    first_turns: dict[str, Any] = {}
    for chapter in document.chapters:
        for turn in parse_dialogue(chapter.text):
            first_turns.setdefault(turn.speaker, {"speaker": turn.speaker, "text": turn.text})
    request = DialogueRequest.model_validate(
        options.model_dump(exclude_none=True) | {"turns": list(first_turns.values())}
    )
    return assign_voices(synthesizer, request)


def _gain_to(chapters: list[ChapterAudio], rate: int, target: float) -> float:
    meter = LoudnessMeter(rate)
    for chapter in chapters:
        for path in chapter.files:
            with wave.open(str(path), "rb") as audio:
                while data := audio.readframes(65536):
                    meter.add(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0)
    return gain_db_to(target, meter.integrated_lufs(), peak=meter.peak)


def _rate_of(path: Path) -> int:
    with wave.open(str(path), "rb") as audio:
        return audio.getframerate()


def _seconds_of(path: Path) -> float:
    with wave.open(str(path), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


def _file_safe(title: str) -> str:
    kept = "".join(c if c.isalnum() or c in " -_" else " " for c in title)
    return " ".join(kept.split())[:60] or "chapter"
