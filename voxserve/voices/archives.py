"""Zip archives from outside (voice packages, backups) read without trusting their headers: a
directory sized before it is parsed, members counted as they inflate."""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from voxserve.errors import InvalidRequestError

ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)
"""What zipfile raises for a damaged archive, an unknown compression or an encrypted member."""
MAX_DIRECTORY_ENTRY_BYTES = 1024
"""A generous size for one member's entry in a zip's central directory (46 bytes and its name)."""
END_RECORD_SEARCH_BYTES = 22 + 2**16
"""A zip's end record and the longest comment that may follow it."""
READ_CHUNK_BYTES = 2**16


def lists_more_than(path: Path, most: int) -> bool:
    """Whether a zip's central directory, by the size its end record gives, is too long for
    ``most`` members: asked before zipfile parses all of it into memory (a few MB of directory
    list a million members). A zip without an end record is left to zipfile to refuse."""
    with open(path, "rb") as file:
        end = file.seek(0, os.SEEK_END)
        file.seek(max(0, end - END_RECORD_SEARCH_BYTES))
        tail = file.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 16:
        return False
    return int.from_bytes(tail[at + 12 : at + 16], "little") > most * MAX_DIRECTORY_ENTRY_BYTES


def member_chunks(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, param: str
) -> Iterator[bytes]:
    """A member's bytes as they inflate, refused as soon as more than ``limit`` come out: the
    size in its header is only a claim, and zipfile inflates all of a member in one call when
    asked for all of it (a 2 MB package inflated to 2 GB before its size was checked)."""
    too_large = InvalidRequestError(
        f"{info.filename} in the {param} is too large: at most {limit} bytes",
        param=param,
        code=f"{param}_too_large",
    )
    if info.file_size > limit:
        raise too_large
    read = 0
    with archive.open(info) as member:
        while chunk := member.read(READ_CHUNK_BYTES):
            read += len(chunk)
            if read > limit:
                raise too_large
            yield chunk
