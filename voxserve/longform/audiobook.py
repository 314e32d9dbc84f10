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
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from voxserve.audio.dsp import float_to_int16, silence
from voxserve.audio.frames import AudioChunk
from voxserve.audio.music_bed import BedMixer, MusicBed
from voxserve.longform.book_file import (
    ChapterAudio,
    book_starts,
    join_chapters,
    packet_span,
    write_book,
)
from voxserve.longform.chapters import Document
from voxserve.longform.levels import ChapterLevels
from voxserve.native_memory import release_freed_memory
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
    chapters_total: int


@dataclass(frozen=True)
class ChapterDone:
    """A chapter whose audio is all made and its own file written."""

    number: int
    title: str
    start: float
    """Seconds into the book."""
    seconds: float
    file: Path
    """Its own file (in the work directory until the book is written)."""


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
    chapter_done: Callable[[ChapterDone], None] | None = None,
) -> list[float]:
    """Speak ``document`` into ``output``; returns each chapter's start (seconds). ``music``:
    a music file and how it sits under the speech (the book and each chapter file).

    Each chapter is brought to ``loudness`` on its own (so its file is right alone, and the book
    is at the target too); its file is written as soon as its pieces are made (``chapter_done``
    is told), and with ``chapters_dir`` moved there with the book."""
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    limit = synthesizer.settings.max_input_chars
    cut = script_pieces if document.is_script else pieces
    plan = [cut(chapter.text, limit) for chapter in document.chapters]
    voices = None
    if document.is_script:  # a podcast: each speaker in the same voice all through
        voices = await asyncio.to_thread(script_voices, synthesizer, document, options)
    # Chapter files depend on how the book is finished, the pieces only on how it is spoken.
    finish = {"format": file_format, "loudness": loudness, "music": _music_key(music)}
    book = _Book(document, file_format, loudness, music,
                 work_directory(work, b"chapters", finish), work)  # fmt: skip
    total = sum(len(chapter) for chapter in plan)
    done, made, audio_seconds, rate = 0, 0, 0.0, options.sample_rate
    # The chapter before is finished (its gain, its file) in a thread while this one is spoken:
    # a piece keeps both cores busier than Piper alone does. Its report goes out before any
    # report of the chapter after, so progress only moves forward.
    finishing: asyncio.Task | None = None

    async def settle() -> None:
        nonlocal finishing
        if finishing is not None:
            task, finishing = finishing, None
            await task

    try:
        for number, (chapter, texts) in enumerate(zip(document.chapters, plan, strict=True), 1):
            files, start = [], audio_seconds
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
                await settle()
                if progress is not None and index < len(texts):  # the last: once it is finished
                    progress(BookProgress(done, total, number - 1, audio_seconds, made, len(plan)))
            await settle()
            told = BookProgress(done, total, number, audio_seconds, made, len(plan))
            finishing = asyncio.create_task(book.finish_chapter(
                number, chapter.title, files, rate, (start, audio_seconds - start),
                lambda finished, told=told: _tell(finished, told, progress, chapter_done),
            ))  # fmt: skip
        await settle()
    finally:
        if finishing is not None:  # stopped: its thread writes into the work directory
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await finishing
    starts = await book.write(output, rate)
    if chapters_dir is not None:
        await asyncio.to_thread(_move_all, book.chapter_files, chapters_dir)
    shutil.rmtree(work, ignore_errors=True)
    return starts


def _tell(
    finished: ChapterDone, told: BookProgress, progress: Callable[[BookProgress], None] | None,
    chapter_done: Callable[[ChapterDone], None] | None,
) -> None:  # fmt: skip
    if chapter_done is not None:
        chapter_done(finished)
    if progress is not None:
        progress(told)


class _Book:
    """How a render's chapters are finished and joined into the book.

    Each chapter's file is written once, the first time its pieces are all made (its loudness
    measured from its own 16-bit file, ``levels``). The book is the chapters' files joined, their
    packets copied; with a music bed it is encoded whole, so the bed runs on under it all."""

    def __init__(
        self, document: Document, file_format: str, loudness: float | None,
        music: tuple[bytes, MusicBed] | None, chapter_files: Path, work: Path,
    ) -> None:  # fmt: skip
        self.document, self.file_format, self.loudness = document, file_format, loudness
        self.music, self.chapter_files, self._work = music, chapter_files, work
        self._finished: list[tuple[ChapterAudio, Path, tuple[Fraction, Fraction]]] = []

    async def finish_chapter(
        self, number: int, title: str, files: list[Path], rate: int,
        place: tuple[float, float], tell: Callable[[ChapterDone], None],
    ) -> None:  # fmt: skip
        """Write chapter ``number``'s file (unless a stopped render did), then ``tell`` it
        done: where it is in the book (``place``, from its samples, where the book is encoded
        whole) and its file."""
        file = self.chapter_files / f"{number:02d} {_file_safe(title)}.{self.file_format}"
        audio = await asyncio.to_thread(self._chapter_file, file, ChapterAudio(title, files), rate)
        span = await asyncio.to_thread(packet_span, file)
        self._finished.append((audio, file, span))
        if self.music is None:  # joined from the files: their packets place the chapters
            starts = book_starts([span for _, _, span in self._finished])
            place = (starts[-2], starts[-1] - starts[-2])
        tell(ChapterDone(number, title, *place, file))

    def _chapter_file(self, file: Path, chapter: ChapterAudio, rate: int) -> ChapterAudio:
        """``chapter`` at its gain, its file written if not there; returns it with its gain
        (needed again only to encode the book whole, under a music bed)."""
        if file.exists() and self.music is None:
            return chapter
        pcm = self._work / f"{file.stem}.pcm"
        _join_pieces(chapter.files, pcm)
        try:
            levels = ChapterLevels(pcm, rate)
            gain = 0.0 if self.loudness is None else levels.gain_to(self.loudness)
            chapter = replace(chapter, gain_db=gain)
            if not file.exists():
                file.parent.mkdir(parents=True, exist_ok=True)
                self._write(file, [replace(chapter, levels=levels)], chapter.title, rate)
            return chapter
        finally:
            pcm.unlink(missing_ok=True)
            # Measuring and encoding a chapter frees its work arrays: given back, the memory a
            # server holds stays flat through a book (bench/longform.py).
            release_freed_memory()

    async def write(self, output: Path, rate: int) -> list[float]:
        """The book, from the chapters finished; returns each chapter's start (seconds)."""
        if self.music is not None:
            chapters = [audio for audio, _, _ in self._finished]
            return await asyncio.to_thread(self._write, output, chapters, self.document.title, rate)
        parts = [(audio.title, file) for audio, file, _ in self._finished]
        return await asyncio.to_thread(
            join_chapters, output, parts, file_format=self.file_format,
            title=self.document.title, author=self.document.author,
        )  # fmt: skip

    def _write(
        self, path: Path, chapters: list[ChapterAudio], title: str | None, rate: int
    ) -> list[float]:
        """The book or one chapter's file, encoded (in a worker thread); a music bed starts
        afresh under each file."""
        bed = None if self.music is None else BedMixer(self.music[0], self.music[1], rate)
        return write_book(path, chapters, file_format=self.file_format, sample_rate=rate,
                          title=title, author=self.document.author, music=bed)  # fmt: skip


def _join_pieces(files: list[Path], pcm: Path) -> None:
    """The pieces' 16-bit samples, one after another, in one raw file."""
    with pcm.open("wb") as joined:
        for path in files:
            with wave.open(str(path), "rb") as piece:
                joined.write(piece.readframes(piece.getnframes()))


def _music_key(music: tuple[bytes, MusicBed] | None) -> str | None:
    if music is None:
        return None
    return hashlib.sha256(music[0]).hexdigest() + music[1].model_dump_json()


def _move_all(source: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()) if source.exists() else []:
        shutil.move(path, destination / path.name)


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


def _rate_of(path: Path) -> int:
    with wave.open(str(path), "rb") as audio:
        return audio.getframerate()


def _seconds_of(path: Path) -> float:
    with wave.open(str(path), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


def _file_safe(title: str) -> str:
    kept = "".join(c if c.isalnum() or c in " -_" else " " for c in title)
    return " ".join(kept.split())[:60] or "chapter"
