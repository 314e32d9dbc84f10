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

import av
import numpy as np

from voxserve.audio.dsp import float_to_int16
from voxserve.audio.limiter import PeakLimiter
from voxserve.audio.music_bed import BedMixer
from voxserve.errors import InvalidRequestError

BOOK_FORMATS = {"m4b": ("ipod", "aac"), "mp4": ("mp4", "aac"), "mp3": ("mp3", "libmp3lame")}
"""Format -> (muxer, encoder)."""
ENCODER_OPTIONS = {"aac": {"aac_coder": "fast"}, "libmp3lame": {"compression_level": "7"}}
"""Encoding is a book's largest cost after speaking it (it is done twice: the book, each
chapter's file): FFmpeg's AAC "fast" coder is four times quicker than its default on speech,
and no worse (its error to the input is smaller on a Piper book); LAME's level 7 twice."""
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
        blocks = limited(_mixed(speech_blocks(chapters), music), sample_rate)
        _encode(temporary, muxer, encoder, blocks, chapters, starts, sample_rate, progress,
                title, author, with_chapters=file_format != "mp3")  # fmt: skip
        if file_format == "mp3":
            _id3_chapters(temporary, chapters, starts, sample_rate, title, author)
    return [int(start) / sample_rate for start in starts[:-1]]


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
        if title:
            container.metadata["title"] = container.metadata["album"] = title
        if author:
            container.metadata["artist"] = author
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
            frame = av.AudioFrame.from_ndarray(
                float_to_int16(np.clip(block, -1.0, 1.0))[None, :],
                format="s16",
                layout="mono",
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


def _id3_chapters(path, chapters, starts, sample_rate, title, author) -> None:
    from mutagen.id3 import CHAP, CTOC, ID3, TALB, TIT2, TPE1, CTOCFlags

    tags = ID3()
    element_ids = [f"chp{index}" for index in range(len(chapters))]
    flags = CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED
    table = [TIT2(text=[title or "Chapters"])]
    tags.add(CTOC(element_id="toc", flags=flags, child_element_ids=element_ids, sub_frames=table))
    for index, (element_id, chapter) in enumerate(zip(element_ids, chapters, strict=True)):
        start_ms, end_ms = (round(1000 * starts[i] / sample_rate) for i in (index, index + 1))
        tags.add(CHAP(element_id=element_id, start_time=start_ms, end_time=end_ms,
                      sub_frames=[TIT2(text=[chapter.title])]))  # fmt: skip
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
