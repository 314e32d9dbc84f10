"""An audiobook file: chapters' audio, one after another, each at its gain, peaks limited, with
chapter markers.

M4B and MP4 hold AAC with chapter atoms (PyAV's ``set_chapters``, read by every audiobook
player); MP3 holds its chapters as ID3v2 ``CHAP`` frames under a ``CTOC`` table of contents
(mutagen, the ``longform`` extra), which Apple Podcasts, VLC and most players show. The chapters'
audio is read from WAV files a block at a time, so memory does not grow with the book, and the
book is written under a temporary name, flushed to disk and renamed into place: it is whole, or
not there.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from voxserve.audio.limiter import PeakLimiter
from voxserve.audio.music_bed import BedMixer
from voxserve.errors import InvalidRequestError
from voxserve.longform.levels import ChapterLevels

BOOK_FORMATS = {"m4b": ("ipod", "aac"), "mp4": ("mp4", "aac"), "mp3": ("mp3", "libmp3lame")}
"""Format -> (muxer, encoder)."""
ENCODER_OPTIONS = {"aac": {"aac_coder": "fast"}, "libmp3lame": {"compression_level": "7"}}
"""Encoding is a book's largest cost after speaking it (once per chapter file; the book only
under a music bed): FFmpeg's AAC "fast" coder is four times quicker than its default on
speech, and no worse (its error to the input is smaller on a Piper book); LAME's level 7
twice."""
BIT_RATE = 64_000
"""Speech in mono: transparent at 64 kb/s in AAC, and close in MP3."""
_BLOCK = 65_536  # samples read from a chapter file at a time


@dataclass(frozen=True)
class ChapterAudio:
    title: str
    files: list[Path]
    """16-bit PCM mono WAV files at the book's rate, in order: the chapter is their sum."""
    gain_db: float = 0.0
    """Its loudness gain (each chapter is brought to the target on its own)."""
    levels: ChapterLevels | None = None
    """Its frames as measured for the gain, where they were: the limiter's gain comes from
    their peaks, and the audio from their file, not the pieces."""

    def frames(self) -> int:
        total = 0
        for path in self.files:
            with wave.open(str(path), "rb") as audio:
                total += audio.getnframes()
        return total


def write_book(
    path: Path,
    chapters: Sequence[ChapterAudio],
    *,
    file_format: str,
    sample_rate: int,
    title: str | None = None,
    author: str | None = None,
    music: BedMixer | None = None,
    progress: Callable[[float], None] | None = None,
) -> list[float]:
    """Write the book to ``path``; returns each chapter's start in seconds. Each chapter is at
    its ``gain_db``; ``music``: a bed mixed under the speech, its fade-out after the last
    chapter; then the true-peak limiter keeps the whole under -1.5 dBTP. ``progress`` is given the
    share written (0 to 1) as it goes."""
    if file_format not in BOOK_FORMATS:
        raise InvalidRequestError(
            f"the book's format should be one of {', '.join(BOOK_FORMATS)}, not {file_format!r}",
            param="response_format",
        )
    lengths = [chapter.frames() for chapter in chapters]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    muxer, encoder = BOOK_FORMATS[file_format]
    with _in_place(path) as temporary:
        _encode(temporary, muxer, encoder, _limited_speech(chapters, music, sample_rate),
                chapters, starts, sample_rate, progress, title, author,
                with_chapters=file_format != "mp3")  # fmt: skip
        if file_format == "mp3":
            bounds = [int(start) / sample_rate for start in starts]
            _id3_chapters(temporary, [chapter.title for chapter in chapters], bounds, title, author)
    return [int(start) / sample_rate for start in starts[:-1]]


def _limited_speech(
    chapters: Sequence[ChapterAudio], music: BedMixer | None, sample_rate: int
) -> Iterator[np.ndarray]:
    """The chapters at their gains, limited: from their measured levels where every chapter
    has them and no music changes the peaks, else through the streamed limiter."""
    if music is None and all(chapter.levels is not None for chapter in chapters):
        for chapter in chapters:
            assert chapter.levels is not None
            yield from chapter.levels.limited(chapter.gain_db)
        return
    yield from limited(_mixed(speech_blocks(chapters), music), sample_rate)


def join_chapters(
    path: Path, chapters: Sequence[tuple[str, Path]], *, file_format: str,
    title: str | None = None, author: str | None = None,
) -> list[float]:  # fmt: skip
    """The book as its chapters' files (title, file: each written by ``write_book``) one after
    another, their encoded packets copied, not encoded again; returns each chapter's start in
    seconds (``book_starts``). Each AAC chapter keeps its encoder's priming, 46 ms of silence
    at its start, inside the pause before it."""
    muxer, _ = BOOK_FORMATS[file_format]
    spans = []
    with _in_place(path) as temporary:
        with av.open(str(temporary), "w", format=muxer) as book:
            stream = None
            _tag(book, title, author)
            cursor = None  # where the next chapter's first packet goes, in the stream's time base
            for _, chapter_file in chapters:
                with av.open(str(chapter_file)) as source:
                    audio = source.streams.audio[0]
                    if stream is None:
                        stream = book.add_stream_from_template(audio)
                    packets = _audio_packets(source)
                    first = packets[0].pts if packets else 0
                    cursor = first if cursor is None else cursor
                    for packet in packets:
                        packet.pts = packet.dts = cursor + packet.pts - first
                        packet.stream = stream
                        book.mux(packet)
                    length = sum(packet.duration for packet in packets)
                    spans.append((first * audio.time_base, length * audio.time_base))
                    cursor += length
            starts = book_starts(spans)
            if file_format != "mp3":
                book.set_chapters([
                    {"id": index + 1, "start": round(start * 1000), "end": round(end * 1000),
                     "time_base": Fraction(1, 1000), "metadata": {"title": chapter_title}}
                    for index, ((chapter_title, _), start, end) in enumerate(
                        zip(chapters, starts, starts[1:], strict=False))
                ])  # fmt: skip
        if file_format == "mp3":
            _id3_chapters(temporary, [name for name, _ in chapters], starts, title, author)
    return starts[:-1]


def packet_span(path: Path) -> tuple[Fraction, Fraction]:
    """(first packet's time, length) of an encoded file's audio, in seconds: an AAC file's
    first packet is its encoder's priming, before time 0."""
    with av.open(str(path)) as source:
        packets = _audio_packets(source)
        first = packets[0].pts if packets else 0
        time_base = source.streams.audio[0].time_base
        return first * time_base, sum(p.duration for p in packets) * time_base


def _audio_packets(source: Any) -> list[Any]:
    """An opened file's audio packets, in order (a chapter's are a few thousand)."""
    # The last one the demuxer gives, without a time, only marks the end.
    return [packet for packet in source.demux(source.streams.audio[0]) if packet.dts is not None]


def book_starts(spans: Sequence[tuple[Fraction, Fraction]]) -> list[float]:
    """Where each chapter of ``spans`` (``packet_span``) starts in the book their files make
    (``join_chapters``), and the book's end, in seconds."""
    if not spans:
        return [0.0]
    positions = np.cumsum([spans[0][0], *(length for _, length in spans)])
    return [max(0.0, float(position)) for position in positions]


def _encode(
    path: Path, muxer: str, encoder: str, blocks: Iterator[np.ndarray],
    chapters: Sequence[ChapterAudio], starts: np.ndarray, sample_rate: int,
    progress: Callable[[float], None] | None, title: str | None, author: str | None, *,
    with_chapters: bool,
) -> None:  # fmt: skip
    total = max(int(starts[-1]), 1)
    with av.open(str(path), "w", format=muxer) as container:
        stream = container.add_stream(encoder, rate=sample_rate, layout="mono")
        stream.bit_rate = BIT_RATE
        stream.codec_context.options = ENCODER_OPTIONS[encoder]
        _tag(container, title, author)
        if with_chapters:
            container.set_chapters([
                {"id": index + 1, "start": int(starts[index]), "end": int(starts[index + 1]),
                 "time_base": Fraction(1, sample_rate), "metadata": {"title": chapter.title}}
                for index, chapter in enumerate(chapters)
            ])  # fmt: skip
        written = 0
        for block in blocks:
            if not len(block):  # the limiter holds back its look-ahead at first
                continue
            # Float samples: both encoders take them as they are (from 16-bit ints, FFmpeg
            # converts them first, a tenth of the encoding's time).
            frame = av.AudioFrame.from_ndarray(
                np.clip(block, -1.0, 1.0).astype(np.float32)[None, :], format="fltp", layout="mono"
            )
            frame.sample_rate = sample_rate
            frame.pts = written
            for packet in stream.encode(frame):
                container.mux(packet)
            written += len(block)
            if progress is not None:
                progress(min(written / total, 1.0))
        for packet in stream.encode(None):
            container.mux(packet)


def speech_blocks(chapters: Sequence[ChapterAudio]) -> Iterator[np.ndarray]:
    """The book's samples (float32) at each chapter's gain, a block at a time."""
    for chapter in chapters:
        gain = np.float32(10 ** (chapter.gain_db / 20) / 32768.0)
        for path in chapter.files:
            with wave.open(str(path), "rb") as audio:
                while data := audio.readframes(_BLOCK):
                    yield np.frombuffer(data, dtype="<i2").astype(np.float32) * gain


def _mixed(blocks: Iterator[np.ndarray], music: BedMixer | None) -> Iterator[np.ndarray]:
    """The speech with the music bed under it and its tail after."""
    for block in blocks:
        yield block if music is None else music.mix(block)
    if music is not None:
        yield music.finish()


def limited(blocks: Iterator[np.ndarray], sample_rate: int) -> Iterator[np.ndarray]:
    """The blocks through the true-peak limiter (the same audio, its peaks under -1.5 dBTP)."""
    limiter = PeakLimiter(sample_rate)
    for block in blocks:
        yield limiter.process(block)
    yield limiter.flush()


def _tag(container: Any, title: str | None, author: str | None) -> None:
    if title:
        container.metadata["title"] = container.metadata["album"] = title
    if author:
        container.metadata["artist"] = author


def _id3_chapters(path, titles, bounds, title, author) -> None:
    """ID3 chapters: ``titles``, each from its bound to the next (seconds, one more)."""
    from mutagen.id3 import CHAP, CTOC, ID3, TALB, TIT2, TPE1, CTOCFlags

    tags = ID3()
    element_ids = [f"chp{index}" for index in range(len(titles))]
    flags = CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED
    table = [TIT2(text=[title or "Chapters"])]
    tags.add(CTOC(element_id="toc", flags=flags, child_element_ids=element_ids, sub_frames=table))
    for index, (element_id, chapter_title) in enumerate(zip(element_ids, titles, strict=True)):
        start_ms, end_ms = (round(1000 * bounds[i]) for i in (index, index + 1))
        tags.add(CHAP(element_id=element_id, start_time=start_ms, end_time=end_ms,
                      sub_frames=[TIT2(text=[chapter_title])]))  # fmt: skip
    if title:
        tags.add(TIT2(text=[title]))
        tags.add(TALB(text=[title]))
    if author:
        tags.add(TPE1(text=[author]))
    tags.save(str(path))


@contextlib.contextmanager
def _in_place(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, flushed and renamed onto it when the block succeeds,
    removed when it fails."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
