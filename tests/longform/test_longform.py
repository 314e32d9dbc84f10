"""Audiobooks: documents read into chapters (text, Markdown, a real EPUB built here), loudness
against pyloudnorm on real speech, book files whose chapter markers read back, and a render that
is stopped and resumed (`voxserve book`)."""

# ruff: noqa: E501  (the EPUB built here is XML written out as a reader sees it)
from __future__ import annotations

import asyncio
import io
import wave
import zipfile
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest
from click.testing import CliRunner
from mutagen.id3 import ID3

from voxserve.audio.dsp import float_to_int16
from voxserve.audio.limiter import true_peaks
from voxserve.cli import main
from voxserve.engines.base import SynthesisOptions
from voxserve.errors import InvalidRequestError
from voxserve.longform import audiobook
from voxserve.longform import chapters as chapters_module
from voxserve.longform.audiobook import pieces, render_book
from voxserve.longform.book_file import (
    ChapterAudio,
    join_chapters,
    limited,
    packet_span,
    speech_blocks,
    write_book,
)
from voxserve.longform.chapters import read_document
from voxserve.longform.levels import ChapterLevels
from voxserve.longform.loudness import MAX_GAIN_DB, LoudnessMeter, gain_db_to
from voxserve.request import SpeechOptions

MARKDOWN = """# The Beginning

It was a bright cold day in April, and the clocks were striking thirteen.

Some `code` and an ![image](x.png) and a [link](http://x).

## The Middle

Nothing much happened in the middle.

# The End

And so the story ends, quietly.
"""


def epub(chapters: list[tuple[str, str]], *, nav: bool = True, drm: bool = False) -> bytes:
    """A small real EPUB: container, package (spine), a nav (EPUB 3) or an NCX (EPUB 2)."""
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as book:
        book.writestr("mimetype", "application/epub+zip")
        book.writestr(
            "META-INF/container.xml",
            """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>""",
        )
        if drm:
            book.writestr("META-INF/encryption.xml", "<encryption/>")
        items = "".join(
            f'<item id="c{n}" href="text/c{n}.xhtml" media-type="application/xhtml+xml"/>'
            for n in range(len(chapters))
        )
        spine = "".join(f'<itemref idref="c{n}"/>' for n in range(len(chapters)))
        toc_item = ('<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
                    if nav else '<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>')  # fmt: skip
        book.writestr(
            "OEBPS/content.opf",
            f"""<?xml version="1.0"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0">
<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>A Test Book</dc:title>
<dc:creator>Ada Writer</dc:creator></metadata>
<manifest>{items}{toc_item}</manifest><spine{"" if nav else ' toc="ncx"'}>{spine}</spine></package>""",
        )
        for n, (title, text) in enumerate(chapters):
            body = "".join(f"<p>{paragraph}</p>" for paragraph in text.split("\n"))
            book.writestr(
                f"OEBPS/text/c{n}.xhtml",
                f"""<?xml version="1.0"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>x</title><style>p {{}}</style></head>
<body><h1>{title} heading</h1>{body}</body></html>""",
            )
        links = "".join(
            f'<li><a href="text/c{n}.xhtml">{t}</a></li>' for n, (t, _) in enumerate(chapters)
        )
        book.writestr(
            "OEBPS/nav.xhtml",
            f"""<?xml version="1.0"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops"><body>
<nav epub:type="toc"><ol>{links}</ol></nav></body></html>""",
        )
        points = "".join(
            f'<navPoint id="p{n}"><navLabel><text>{t}</text></navLabel><content src="text/c{n}.xhtml"/></navPoint>'
            for n, (t, _) in enumerate(chapters)
        )
        book.writestr(
            "OEBPS/toc.ncx",
            f"""<?xml version="1.0"?>
<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1"><navMap>{points}</navMap></ncx>""",
        )
    return data.getvalue()


# Documents to chapters


def test_markdown_headings_start_chapters_and_markup_is_not_read():
    document = read_document(MARKDOWN.encode(), "story.md")
    assert [c.title for c in document.chapters] == ["The Beginning", "The Middle", "The End"]
    first = document.chapters[0].text
    assert "bright cold day" in first and "code" in first and "link" in first
    assert "image" not in first and "http" not in first and "#" not in first


def test_plain_text_is_one_chapter_or_split_by_a_pattern():
    text = "Prologue words.\nCHAPTER 1\nFirst words.\nCHAPTER 2\nSecond words.\n"
    assert len(read_document(text.encode(), "b.txt").chapters) == 1
    split = read_document(text.encode(), "b.txt", chapter_pattern=r"^CHAPTER \d+")
    assert [(c.title, c.text) for c in split.chapters] == [
        ("Opening", "Prologue words."), ("CHAPTER 1", "First words."), ("CHAPTER 2", "Second words."),
    ]  # fmt: skip


@pytest.mark.parametrize("nav", [True, False], ids=["epub3-nav", "epub2-ncx"])
def test_an_epub_is_read_in_spine_order_titled_by_its_table_of_contents(nav):
    book = epub(
        [("Arrival", "The train came in.\nShe stepped down."), ("Home", "The door was open.")],
        nav=nav,
    )
    document = read_document(book, "book.epub")
    assert (document.title, document.author) == ("A Test Book", "Ada Writer")
    assert [c.title for c in document.chapters] == ["Arrival", "Home"]
    assert document.chapters[0].text == "Arrival heading\nThe train came in.\nShe stepped down."


@pytest.mark.parametrize(
    ("data", "name", "options", "param", "words"),
    [
        (b"\xff\xfe\x00bad", "b.txt", {}, "file", "UTF-8"),
        (b"x", "b.txt", {"chapter_pattern": "(unclosed"}, "chapter_pattern", "regular expression"),
        (b"not a zip", "b.epub", {}, "file", "not an EPUB"),
        (epub([("A", "b")], drm=True), "b.epub", {}, "file", "DRM"),
        (b"  \n ", "b.txt", {}, "file", "no text"),
        (b"x", "b.txt", {"document_format": "pdf"}, "document_format", "one of"),
    ],
)
def test_bad_documents_are_refused_naming_the_field(data, name, options, param, words):
    with pytest.raises(InvalidRequestError, match=words) as refused:
        read_document(data, name, **options)
    assert refused.value.param == param


def test_an_epub_that_unpacks_too_large_is_refused(monkeypatch):
    monkeypatch.setattr(chapters_module, "MAX_UNPACKED_BYTES", 2000)
    with pytest.raises(InvalidRequestError, match="unpacks to over") as refused:
        read_document(epub([("A", "words " * 1000)]), "b.epub")
    assert refused.value.param == "file"


def test_long_chapters_go_in_pieces_of_a_requests_size():
    text = "One sentence here. " * 40 + "\nA short paragraph.\n\n"
    parts = pieces(text, 100)
    assert all(len(part) <= 100 for part in parts) and parts[-1] == "A short paragraph."
    assert " ".join(parts[:-1]).split() == ("One sentence here. " * 40).split()


# Loudness


@pytest.fixture(scope="module")
def speech(piper_synthesizer) -> tuple[np.ndarray, int]:
    engine = piper_synthesizer.registry.get("piper")
    text = "Loudness is measured over the whole book. Quiet parts and loud parts are weighed."
    chunks = list(engine.synthesize(text, SynthesisOptions(voice="joe")))
    return np.concatenate([c.samples for c in chunks]), chunks[0].sample_rate


def test_the_streamed_meter_agrees_with_pyloudnorm_on_real_speech(speech):
    samples, rate = speech
    meter = LoudnessMeter(rate)
    for start in range(0, len(samples), 1234):  # pieces that cut blocks anywhere
        meter.add(samples[start : start + 1234])
    expected = pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64))
    # They differ only at the end: pyloudnorm rounds the block count up and counts a last, short
    # block as a whole one; the streamed meter counts whole blocks. On 5 s that is ~0.2 LU.
    assert meter.integrated_lufs() == pytest.approx(expected, abs=0.3)
    assert meter.peak == pytest.approx(float(np.max(np.abs(samples))))
    silent = LoudnessMeter(rate)
    silent.add(np.zeros(rate * 2, np.float32))
    assert silent.integrated_lufs() == -np.inf and gain_db_to(-16, -np.inf) == 0


def test_the_gain_reaches_the_target_but_does_not_raise_near_silence_into_its_noise():
    assert gain_db_to(-16, -26) == pytest.approx(10)
    assert gain_db_to(-16, -12) == pytest.approx(-4)
    assert gain_db_to(-16, -60) == MAX_GAIN_DB


# Book files


def wav_file(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(float_to_int16(samples).tobytes())
    return path


@pytest.mark.parametrize("file_format", ["m4b", "mp4", "mp3"])
def test_a_book_holds_its_chapters_in_order_with_markers(speech, tmp_path, file_format):
    samples, rate = speech
    first = [wav_file(tmp_path / f"a{n}.wav", samples, rate) for n in range(2)]
    second = [wav_file(tmp_path / "b.wav", samples[:rate], rate)]
    chapters = [ChapterAudio("Arrival", first), ChapterAudio("Home", second)]
    path = tmp_path / f"book.{file_format}"
    starts = write_book(
        path, chapters, file_format=file_format, sample_rate=rate, title="T", author="A"
    )
    assert starts == [0.0, pytest.approx(2 * len(samples) / rate)]
    with av.open(str(path)) as container:
        marks = [
            (c["metadata"]["title"], float(c["start"] * c["time_base"]))
            for c in container.chapters()
        ]
        duration = container.duration / 1e6
    marks.sort(key=lambda mark: mark[1])  # FFmpeg lists an MP3's CHAP frames last first
    assert [title for title, _ in marks] == ["Arrival", "Home"]
    assert marks[1][1] == pytest.approx(starts[1], abs=0.01)
    assert duration == pytest.approx((2 * len(samples) + rate) / rate, abs=0.1)
    if file_format == "mp3":
        tags = ID3(path)
        (table,) = tags.getall("CTOC")  # the chapters' order is the table's
        chapters_by_id = {frame.element_id: frame for frame in tags.getall("CHAP")}
        ordered = [chapters_by_id[element] for element in table.child_element_ids]
        assert [str(frame.sub_frames["TIT2"]) for frame in ordered] == ["Arrival", "Home"]
        assert [frame.start_time for frame in ordered] == [0, round(1000 * starts[1])]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_chapters_levels_find_its_gain_and_limit_it_as_the_streamed_limiter(speech, tmp_path):
    samples, rate = speech
    chapter = np.tile(samples, 3)
    pcm = tmp_path / "chapter.pcm"
    pcm.write_bytes(float_to_int16(chapter).tobytes())
    levels = ChapterLevels(pcm, rate)
    gain = levels.gain_to(-16.0)
    assert gain > 16 - 21  # more than the loudness alone asks: the limiter takes some back
    made = np.concatenate(list(levels.limited(gain)))
    wav = wav_file(tmp_path / "chapter.wav", chapter, rate)
    streamed = np.concatenate(list(limited(speech_blocks([ChapterAudio("", [wav], gain)]), rate)))
    assert len(made) == len(chapter) and np.max(np.abs(made - streamed)) < 1e-5
    assert 20 * np.log10(np.max(true_peaks(made))) <= -1.5 + 0.01
    heard = pyloudnorm.Meter(rate).integrated_loudness(made.astype(np.float64))
    assert heard == pytest.approx(-16, abs=0.3)  # pyloudnorm counts a last short block
    meter = LoudnessMeter(rate)
    meter.add(made)
    assert levels.heard_lufs(gain) == pytest.approx(meter.integrated_lufs(), abs=0.05)
    (tmp_path / "empty.pcm").write_bytes(b"")
    empty = ChapterLevels(tmp_path / "empty.pcm", rate)
    assert empty.gain_to(-16.0) == 0 and list(empty.limited(0.0)) == []


@pytest.mark.parametrize("file_format", ["m4b", "mp3"])
def test_a_book_joined_from_its_chapter_files_has_their_markers(speech, tmp_path, file_format):
    samples, rate = speech
    parts = []
    for number, title in enumerate(["One", "Two", "Three"]):
        chapter = ChapterAudio(title, [wav_file(tmp_path / f"{number}.wav", samples, rate)])
        path = tmp_path / f"{number}.{file_format}"
        write_book(path, [chapter], file_format=file_format, sample_rate=rate, title=title)
        parts.append((title, path))
    book = tmp_path / f"book.{file_format}"
    starts = join_chapters(book, parts, file_format=file_format, title="T", author="A")
    spans = [packet_span(path) for _, path in parts]
    # Each chapter starts where the one before it ends: its packets' length (an AAC file's
    # priming, before time 0, is the first chapter's only).
    assert starts[0] == 0 and starts[1] == pytest.approx(float(spans[0][0] + spans[0][1]))
    assert starts[2] - starts[1] == pytest.approx(float(spans[1][1]))
    with av.open(str(book)) as container:
        marks = sorted((float(c["start"] * c["time_base"]), c["metadata"]["title"])
                       for c in container.chapters())  # fmt: skip
        assert container.metadata.get("title") == "T" or file_format == "mp3"
    assert [title for _, title in marks] == ["One", "Two", "Three"]
    assert [start for start, _ in marks] == pytest.approx(starts, abs=0.002)
    decoded, _ = decode_file(book)
    assert len(decoded) / rate == pytest.approx(3 * len(samples) / rate, abs=0.2)


def test_a_book_that_fails_to_write_leaves_nothing(speech, tmp_path):
    samples, rate = speech
    chapters = [
        ChapterAudio("One", [wav_file(tmp_path / "a.wav", samples, rate), tmp_path / "gone.wav"])
    ]
    with pytest.raises(FileNotFoundError):
        write_book(tmp_path / "book.m4b", chapters, file_format="m4b", sample_rate=rate)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


# Rendering, stopped and resumed


class Stop(Exception):
    pass


def test_a_stopped_render_resumes_where_it_stopped(piper_synthesizer, tmp_path, monkeypatch):
    document = read_document(MARKDOWN.encode(), "story.md")
    work, output = tmp_path / "work", tmp_path / "book.m4b"
    options = SpeechOptions(voice="joe")

    def stop_after_two(progress):
        if progress.pieces_done == 2:
            raise Stop

    with pytest.raises(Stop):
        asyncio.run(render_book(piper_synthesizer, document, options, output, work,
                                file_format="m4b", progress=stop_after_two))  # fmt: skip
    made = sorted(path.name for path in work.glob("*.wav"))
    # The second piece's report is chapter 1's, told once it is finished: in a thread while
    # the next chapter's first piece is spoken.
    assert made == ["0001-00001.wav", "0001-00002.wav", "0002-00001.wav"]
    assert not output.exists()
    assert not list(work.glob("*.part"))
    spoken = []
    speak_piece = audiobook._speak_piece

    async def counted(synthesizer, options, text, rate, pause, path, voices):
        spoken.append(path.name)
        return await speak_piece(synthesizer, options, text, rate, pause, path, voices)

    monkeypatch.setattr(audiobook, "_speak_piece", counted)
    seen, finished = [], []

    def chapter_done(chapter):  # its file is there now, before the book
        finished.append((chapter.number, chapter.title, chapter.file.exists(), output.exists()))

    starts = asyncio.run(render_book(
        piper_synthesizer, document, options, output, work, file_format="m4b",
        chapters_dir=tmp_path / "chapters", progress=seen.append, chapter_done=chapter_done,
    ))  # fmt: skip
    assert len(starts) == 3 and not work.exists()  # the pieces go once the book is written
    assert [p.pieces_done for p in seen] == [1, 2, 3, 4]
    assert [p.chapters_done for p in seen] == [0, 1, 2, 3] and seen[0].chapters_total == 3
    assert [p.pieces_made for p in seen] == [0, 0, 0, 1]
    assert spoken == ["0003-00001.wav"]  # only what the first run had not made
    assert finished == [
        (1, "The Beginning", True, False), (2, "The Middle", True, False),
        (3, "The End", True, False),
    ]  # fmt: skip
    # Loudness, measured again from the files: the book and each chapter at the target, their
    # true peaks under -1 dBTP (the limiter's -1.5, less what the AAC encoder overshoots).
    for path in [output, *sorted((tmp_path / "chapters").iterdir())]:
        decoded, rate = decode_file(path)
        loudness = pyloudnorm.Meter(rate).integrated_loudness(decoded.astype(np.float64))
        assert loudness == pytest.approx(-16, abs=0.5), path.name
        assert 20 * np.log10(np.max(true_peaks(decoded))) <= -1.0, path.name


def decode_file(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        decoded = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
        return decoded, container.streams.audio[0].rate


def test_the_command_writes_a_book_and_its_chapter_files(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXSERVE_DATA_DIR", str(tmp_path / "data"))
    source = tmp_path / "story.md"
    source.write_text(MARKDOWN)
    speak_piece = audiobook._speak_piece

    async def crash_on_the_second(synthesizer, options, text, rate, pause, path, voices):
        if path.name != "0001-00001.wav":
            raise Stop
        return await speak_piece(synthesizer, options, text, rate, pause, path, voices)

    monkeypatch.setattr(audiobook, "_speak_piece", crash_on_the_second)
    crashed = CliRunner().invoke(main, ["book", str(source), "-o", str(tmp_path / "story.mp3")])
    assert isinstance(crashed.exception, Stop)
    monkeypatch.setattr(audiobook, "_speak_piece", speak_piece)
    result = CliRunner().invoke(
        main,
        [
            "book",
            str(source),
            "-o",
            str(tmp_path / "story.mp3"),
            "--chapters-dir",
            str(tmp_path / "ch"),
        ],
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # as rich wrapped it
    assert "3 chapters" in said and "stopped: 1 made already" in said
    assert sorted(p.name for p in (tmp_path / "ch").iterdir()) == [
        "01 The Beginning.mp3", "02 The Middle.mp3", "03 The End.mp3",
    ]  # fmt: skip
    music = tmp_path / "bed.wav"
    wav_file(music, 0.3 * np.sin(np.arange(22050) / 22050 * 2 * np.pi * 220), 22050)
    with_music = CliRunner().invoke(
        main, ["book", str(source), "-o", str(tmp_path / "bed.m4b"), "--music", str(music)]
    )
    assert with_music.exit_code == 0, with_music.output
    with (
        av.open(str(tmp_path / "bed.m4b")) as container,
        av.open(str(tmp_path / "story.mp3")) as plain,
    ):
        assert (
            container.duration > plain.duration + 2.5e6
        )  # the bed's 3 s fade-out after the last word
    out_of_range = CliRunner().invoke(
        main,
        [
            "book",
            str(source),
            "-o",
            str(tmp_path / "x.m4b"),
            "--music",
            str(music),
            "--music-level",
            "5",
        ],
    )
    assert out_of_range.exit_code == 2 and "level_db" in out_of_range.output
    refused = CliRunner().invoke(main, ["book", str(source), "-o", str(tmp_path / "story.ogg")])
    assert refused.exit_code == 2 and ".m4b" in refused.output


SCRIPT = """Welcome to the show about bread.
Host|||Today we talk about sourdough.
Guest|||I love sourdough! It takes patience.
It also takes flour.
Host|||Thank you for coming.
"""


def test_a_script_is_read_as_one_and_cut_a_turn_a_piece():
    document = read_document(SCRIPT.encode(), "show.txt")
    assert document.is_script and len(document.chapters) == 1
    assert audiobook.script_pieces(document.chapters[0].text, 4096) == [
        "Welcome to the show about bread.",
        "Host|||Today we talk about sourdough.",
        "Guest|||I love sourdough! It takes patience.",
        "Guest|||It also takes flour.",  # a turn's lines: its paragraphs, each in its voice
        "Host|||Thank you for coming.",
    ]
    long_turn = "Host|||" + "A sentence of the host. " * 20
    assert all(piece.startswith("Host|||") and len(piece) <= 100
               for piece in audiobook.script_pieces(long_turn, 100))  # fmt: skip
    with pytest.raises(InvalidRequestError, match="no speaker") as refused:
        read_document(b"|||nobody said this", "show.txt", document_format="script")
    assert refused.value.param == "file"


def test_a_podcast_script_keeps_each_speakers_voice_all_through(piper_synthesizer, tmp_path):
    document = read_document(SCRIPT.encode(), "show.txt")
    voices = audiobook.script_voices(piper_synthesizer, document, SpeechOptions())
    assert len({voices[""], voices["Host"], voices["Guest"]}) == 3
    seen = []
    starts = asyncio.run(render_book(piper_synthesizer, document, SpeechOptions(), tmp_path / "show.mp3",
                                     tmp_path / "work", file_format="mp3", progress=seen.append))  # fmt: skip
    assert starts == [0.0] and seen[-1].pieces_total == 5
    with av.open(str(tmp_path / "show.mp3")) as container:
        assert container.duration / 1e6 > 6
