"""Documents to chapters: plain text, Markdown and EPUB, read into titled plain-text chapters.

- Plain text: one chapter, or chapters where a line matches ``chapter_pattern`` (a regex: the
  matching line is the chapter's title).
- Dialogue scripts (``Speaker|||line`` or ``[SPEAKER0] line``, a text file that holds such
  lines, or ``document_format="script"``): chapters as plain text's, spoken as dialogues.
- Markdown: each ``#`` or ``##`` heading starts a chapter; the markup is rendered away with
  markdown-it (code blocks and images are not read aloud).
- EPUB: the spine's documents in reading order, each titled from the table of contents (EPUB 3
  ``nav.xhtml`` or EPUB 2 ``toc.ncx``), else its first heading. Read with the standard library's
  zipfile and XML parser, bounded in size (a zip bomb stops at ``MAX_UNPACKED_BYTES``). A book
  with ``META-INF/encryption.xml`` is DRM-protected: refused, as its text cannot be read.
"""

from __future__ import annotations

import html.parser
import posixpath
import re
import zipfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import PurePath
from xml.etree import ElementTree

from voxserve.errors import InvalidRequestError
from voxserve.text.dialogue import is_dialogue, parse_dialogue

DOCUMENT_FORMATS = ("text", "markdown", "epub", "script")
MAX_UNPACKED_BYTES = 200 * 2**20
"""An EPUB's text, unpacked: a long novel is a few megabytes."""
_SKIPPED_TAGS = frozenset({"script", "style", "head", "title", "nav", "figure", "table"})
_BLOCK_TAGS = frozenset({"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "section",
                         "blockquote", "tr"})  # fmt: skip
_HEADINGS = ("h1", "h2", "h3")
_NAMESPACES = {
    "container": "urn:oasis:names:tc:opendocument:xmlns:container",
    "opf": "http://www.idpf.org/2007/opf",
    "dc": "http://purl.org/dc/elements/1.1/",
    "ncx": "http://www.daisy.org/z3986/2005/ncx/",
    "xhtml": "http://www.w3.org/1999/xhtml",
    "epub": "http://www.idpf.org/2007/ops",
}


@dataclass(frozen=True)
class Chapter:
    title: str
    text: str
    """Plain text to speak, paragraphs on lines of their own."""


@dataclass(frozen=True)
class Document:
    title: str | None
    author: str | None
    chapters: list[Chapter]
    """Never empty: a document without chapters is one."""
    is_script: bool = False
    """A dialogue script (``Speaker|||line``, ``[SPEAKER0] line``): each chapter's text is its
    lines, spoken in its speakers' voices."""


def read_document(
    data: bytes, filename: str, *, document_format: str | None = None,
    chapter_pattern: str | None = None,
) -> Document:  # fmt: skip
    """``data``, a file named ``filename``, as chapters. ``document_format``: one of
    DOCUMENT_FORMATS, or None to tell from the name (``.epub``, ``.md``/``.markdown``, else text).
    Raises InvalidRequestError naming ``file``, ``document_format`` or ``chapter_pattern``."""
    kind = document_format or _format_from_name(filename)
    if kind not in DOCUMENT_FORMATS:
        raise InvalidRequestError(
            f"document_format should be one of {', '.join(DOCUMENT_FORMATS)}, not {kind!r}",
            param="document_format",
        )
    if kind == "epub":
        document = _read_epub(data)
    else:
        text = _text_of(data)
        title = PurePath(filename).stem or None
        if kind == "markdown":
            document = Document(title, None, _markdown_chapters(text))
        elif kind == "script" or (document_format is None and is_dialogue(text)):
            document = Document(title, None, _text_chapters(text, chapter_pattern), True)
            _check_script(document)
        else:
            document = Document(title, None, _text_chapters(text, chapter_pattern))
    chapters = [chapter for chapter in document.chapters if chapter.text.strip()]
    if not chapters:
        raise InvalidRequestError(f"{filename} has no text to read", param="file")
    return Document(document.title, document.author, chapters, document.is_script)


def _check_script(document: Document) -> None:
    for chapter in document.chapters:
        try:
            parse_dialogue(chapter.text)
        except ValueError as error:
            raise InvalidRequestError(
                f"the script's {chapter.title}: {error}", param="file"
            ) from error


def _format_from_name(filename: str) -> str:
    suffix = PurePath(filename).suffix.lower()
    return {".epub": "epub", ".md": "markdown", ".markdown": "markdown"}.get(suffix, "text")


def _text_of(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidRequestError(
            f"the file is not UTF-8 text (byte {error.start}): save it as UTF-8", param="file"
        ) from error


def _text_chapters(text: str, pattern: str | None) -> list[Chapter]:
    if not pattern:
        return [Chapter("Chapter 1", text.strip())]
    try:
        starts = re.compile(pattern)
    except re.error as error:
        raise InvalidRequestError(
            f"chapter_pattern is not a valid regular expression: {error}", param="chapter_pattern"
        ) from error
    chapters: list[Chapter] = []
    title, lines = None, []
    for line in text.splitlines():
        if starts.search(line):
            chapters.append(Chapter(title or "Opening", "\n".join(lines).strip()))
            title, lines = line.strip(), []
        else:
            lines.append(line)
    chapters.append(Chapter(title or "Chapter 1", "\n".join(lines).strip()))
    return [chapter for chapter in chapters if chapter.text] or [Chapter("Chapter 1", text)]


def _markdown_chapters(text: str) -> list[Chapter]:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(text)
    chapters: list[Chapter] = []
    title, paragraphs = None, []
    in_heading = None
    for token in tokens:
        if token.type == "heading_open":
            in_heading = token.tag
        elif token.type == "heading_close":
            in_heading = None
        elif token.type == "inline" and in_heading in ("h1", "h2"):
            if paragraphs or title:
                chapters.append(Chapter(title or "Opening", "\n".join(paragraphs)))
            title, paragraphs = _inline_text(token), []
        elif token.type == "inline":
            paragraphs.append(_inline_text(token))
    chapters.append(Chapter(title or "Chapter 1", "\n".join(paragraphs)))
    return chapters


def _inline_text(token) -> str:
    """An inline token's words: text, code spans and link texts; images are not read."""
    parts = [
        child.content for child in token.children or ()
        if child.type in ("text", "code_inline", "softbreak")
    ]  # fmt: skip
    return "".join(part or " " for part in parts).strip()


def _read_epub(data: bytes) -> Document:
    try:
        book = zipfile.ZipFile(BytesIO(data))
    except zipfile.BadZipFile as error:
        raise InvalidRequestError(
            "the file is not an EPUB (not a zip archive)", param="file"
        ) from error
    names = set(book.namelist())
    if "META-INF/encryption.xml" in names:
        raise InvalidRequestError(
            "the EPUB is DRM-protected (META-INF/encryption.xml): its text cannot be read",
            param="file",
        )
    budget = [MAX_UNPACKED_BYTES]
    try:
        container = _xml(book, "META-INF/container.xml", budget)
        rootfile = container.find(".//container:rootfile", _NAMESPACES)
        if rootfile is None:
            raise InvalidRequestError("the EPUB names no package document", param="file")
        opf_path = rootfile.get("full-path", "")
        package = _xml(book, opf_path, budget)
        base = posixpath.dirname(opf_path)
        manifest = {
            item.get("id"): (posixpath.normpath(posixpath.join(base, item.get("href", ""))), item)
            for item in package.iterfind(".//opf:manifest/opf:item", _NAMESPACES)
        }
        titles = _toc_titles(book, manifest, package, budget)
        chapters = []
        for itemref in package.iterfind(".//opf:spine/opf:itemref", _NAMESPACES):
            if itemref.get("linear") == "no" or itemref.get("idref") not in manifest:
                continue
            path, _ = manifest[itemref.get("idref")]
            heading, text = _xhtml_text(_read(book, path, budget))
            if text.strip():
                chapters.append(
                    Chapter(titles.get(path) or heading or f"Chapter {len(chapters) + 1}", text)
                )
    except (KeyError, ElementTree.ParseError) as error:
        raise InvalidRequestError(f"the EPUB is broken: {error}", param="file") from error
    metadata = package.find("opf:metadata", _NAMESPACES)
    return Document(_metadata(metadata, "dc:title"), _metadata(metadata, "dc:creator"), chapters)


def _read(book: zipfile.ZipFile, name: str, budget: list[int]) -> bytes:
    """A member, counted against the unpacked budget as it is read (its declared size may lie)."""
    with book.open(name) as member:
        data = member.read(budget[0] + 1)
    budget[0] -= len(data)
    if budget[0] < 0:
        raise InvalidRequestError(
            f"the EPUB unpacks to over {MAX_UNPACKED_BYTES // 2**20} MB", param="file"
        )
    return data


def _xml(book: zipfile.ZipFile, name: str, budget: list[int]) -> ElementTree.Element:
    data = _read(book, name, budget)
    if b"<!DOCTYPE" in data[:1024] and b"<!ENTITY" in data:
        raise InvalidRequestError(f"the EPUB's {name} declares entities: refused", param="file")
    return ElementTree.fromstring(data)


def _toc_titles(book, manifest, package, budget) -> dict[str, str]:
    """Document path -> its title in the table of contents (EPUB 3 nav, else EPUB 2 NCX)."""
    for path, item in manifest.values():
        if "nav" in (item.get("properties") or "").split():
            nav = _xml(book, path, budget)
            base = posixpath.dirname(path)
            return {
                posixpath.normpath(posixpath.join(base, link.get("href", "").split("#")[0])):
                    " ".join("".join(link.itertext()).split())
                for link in nav.iterfind(".//xhtml:nav//xhtml:a", _NAMESPACES)
            }  # fmt: skip
    toc_id = package.find("opf:spine", _NAMESPACES)
    toc = manifest.get(toc_id.get("toc")) if toc_id is not None else None
    if toc is None:
        return {}
    ncx = _xml(book, toc[0], budget)
    base = posixpath.dirname(toc[0])
    titles = {}
    for point in ncx.iterfind(".//ncx:navPoint", _NAMESPACES):
        label = point.find("ncx:navLabel/ncx:text", _NAMESPACES)
        content = point.find("ncx:content", _NAMESPACES)
        if label is not None and content is not None:
            target = posixpath.normpath(posixpath.join(base, content.get("src", "").split("#")[0]))
            titles.setdefault(target, " ".join((label.text or "").split()))
    return titles


def _metadata(metadata, tag: str) -> str | None:
    found = metadata.find(tag, _NAMESPACES) if metadata is not None else None
    return " ".join(found.text.split()) if found is not None and found.text else None


class _XhtmlText(html.parser.HTMLParser):
    """An XHTML document's readable text, a block to a line, and its first heading."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = [""]
        self.heading: str | None = None
        self._skipping = 0
        self._in_heading = False
        self._heading_text: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        if tag in _BLOCK_TAGS:
            self.lines.append("")
        if tag in _HEADINGS and self.heading is None:
            self._in_heading = True

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS and self._skipping:
            self._skipping -= 1
        if tag in _BLOCK_TAGS:
            self.lines.append("")
        if tag in _HEADINGS and self._in_heading:
            self._in_heading = False
            self.heading = " ".join("".join(self._heading_text).split()) or None

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        self.lines[-1] += data
        if self._in_heading:
            self._heading_text.append(data)


def _xhtml_text(data: bytes) -> tuple[str | None, str]:
    parser = _XhtmlText()
    parser.feed(data.decode("utf-8", errors="replace"))
    parser.close()
    lines = [" ".join(line.split()) for line in parser.lines]
    return parser.heading, "\n".join(line for line in lines if line)
