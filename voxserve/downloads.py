"""Model files fetched once, whole and verified: ``download(url, path, sha256)``.

The bytes go to ``path + ".part"`` as they arrive, hashed as they are written, and the file is
renamed into place (``os.replace``) only once its sha256 is the one expected: whatever stops a
download, a file at ``path`` is whole and verified, and an engine never loads a partial one.

- An interrupted download keeps its ``.part``; the next call resumes it with a Range request,
  and starts over when the server answers with the whole file (200) instead of the rest (206).
- A download that is not the file expected (another sha256) is deleted, ``.part`` and all.
- A file already at ``path`` with the expected sha256 is not fetched again. One with another is
  refused and left alone: no download put it there (they are verified first), so it is someone's
  own (another version, a file copied by hand), theirs to remove.
- One download of a file at a time, across threads and processes (``path + ".lock"``, left
  beside it): another caller waits, then finds the file in place.

Failures are ``EngineUnavailableError``s naming the file and the URL (without its credentials,
which are sent as basic auth), and both digests for a mismatch. Blocking: run it in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx

from voxserve.download_progress import ProgressCallback, reporting
from voxserve.errors import EngineUnavailableError
from voxserve.net import redact_url, scrub, upstream_reason, without_credentials

try:
    import fcntl
except ImportError:  # Windows: no lock, so one download of a file at a time is the caller's
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("voxserve.downloads")
BLOCK = 1 << 20
TIMEOUT = httpx.Timeout(60.0, connect=15.0)  # per read: a stalled download fails, a slow one not
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def download(
    url: str,
    path: str | Path,
    sha256: str,
    *,
    progress: ProgressCallback | None = None,
    client: httpx.Client | None = None,
) -> Path:
    """``url``'s file at ``path``, checked against ``sha256``: fetched (or resumed) unless the
    file is there already. ``progress``: told as bytes arrive (default: the CLI's bar, if any);
    ``client``: the httpx client to fetch with (default: one of its own; another should follow
    redirects, as the Hugging Face Hub's downloads need)."""
    path = Path(path)
    expected = sha256.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        if path.exists():
            _check_existing(path, expected)
            return path
        part = path.with_name(path.name + ".part")
        logger.info("downloading %s from %s", path, redact_url(url))
        with contextlib.ExitStack() as stack:
            if client is None:
                client = stack.enter_context(httpx.Client(timeout=TIMEOUT, follow_redirects=True))
            if progress is None:
                progress = stack.enter_context(reporting(path.name))
            digest = _fetch(client, url, part, progress)
        if digest != expected:
            part.unlink(missing_ok=True)
            raise EngineUnavailableError(
                f"the download of {path.name} from {redact_url(url)} is not the file expected: "
                f"its sha256 is {digest}, not {expected}; it was deleted",
                code="download_corrupt",
            )
        os.replace(part, path)
        logger.info("downloaded %s (sha256 verified)", path)
    return path


def _fetch(client: httpx.Client, url: str, part: Path, progress: ProgressCallback | None) -> str:
    """``url`` into ``part``, after what it holds already; the sha256 of the whole."""
    name = part.name.removesuffix(".part")
    hasher = hashlib.sha256()
    have = _hash_file(part, hasher) if part.exists() else 0
    plain_url, auth = without_credentials(url)
    # Ranges of the file's own bytes, not of a compressed form of it.
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={have}-"} if have else {})
    try:
        with client.stream("GET", plain_url, headers=headers, auth=auth) as response:
            status = response.status_code
            if status == 416 and have:  # nothing after what .part holds: it is whole (or wrong)
                return hasher.hexdigest()
            if status == 200:  # the whole file: a first try, or a server that ignores Range
                hasher, have = hashlib.sha256(), 0
            elif status != 206 or not have:
                raise EngineUnavailableError(
                    f"could not download {name} from {redact_url(url)}: "
                    f"{upstream_reason(response)}",
                    code="download_failed",
                )
            total = _total(response, part, have)
            _write(response, part, have, hasher, total, progress, redact_url(url))
    except httpx.TransportError as error:  # before any byte: no connection, no answer
        raise EngineUnavailableError(
            f"could not download {name} from {redact_url(url)}: {_reason(error)}",
            code="download_failed",
        ) from error
    return hasher.hexdigest()


def _write(
    response: httpx.Response,
    part: Path,
    have: int,
    hasher: hashlib._Hash,
    total: int | None,
    progress: ProgressCallback | None,
    shown: str,
) -> None:
    """The answer's body appended to the ``have`` bytes of ``part`` (none: it is replaced)."""
    done = have
    with part.open("ab" if have else "wb") as file:
        if progress is not None:
            progress(done, total)
        try:
            for block in response.iter_bytes():  # as they come: a cut loses none of them
                file.write(block)
                hasher.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
        except httpx.TransportError as error:
            of = f" of {total}" if total is not None else ""
            raise EngineUnavailableError(
                f"the download of {part.name.removesuffix('.part')} from {shown} stopped after "
                f"{done}{of} bytes ({_reason(error)}); they are kept in {part}, and the next try "
                "resumes there",
                code="download_interrupted",
            ) from error


def _total(response: httpx.Response, part: Path, have: int) -> int | None:
    """The whole file's size, when the answer tells it. A 206 must go on where ``part`` ends:
    one that does not is refused, and ``part`` deleted, so that the next try starts over."""
    if response.status_code == 206:
        found = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
        if found is None or int(found[1]) != have:
            part.unlink()
            raise EngineUnavailableError(
                f"{redact_url(str(response.url))} answered another range than the one asked for "
                f"(bytes={have}-): {response.headers.get('content-range')!r}; the partial "
                "download was deleted",
                code="download_failed",
            )
        return None if found[2] == "*" else int(found[2])
    length = response.headers.get("content-length", "")
    return int(length) if length.isdigit() else None


def _reason(error: httpx.TransportError) -> str:
    return f"{type(error).__name__}: {scrub(str(error))}".removesuffix(": ")


def _check_existing(path: Path, expected: str) -> None:
    hasher = hashlib.sha256()
    _hash_file(path, hasher)
    if (digest := hasher.hexdigest()) != expected:
        raise EngineUnavailableError(
            f"{path} is there already and is not the file expected: its sha256 is {digest}, not "
            f"{expected}. No download put it there (each is verified first), so it is left "
            "alone: remove it to download the file again",
            code="download_conflict",
        )


def _hash_file(path: Path, hasher: hashlib._Hash) -> int:
    """Feed ``path``'s bytes to ``hasher``; how many there were."""
    size = 0
    with path.open("rb") as file:
        while block := file.read(BLOCK):
            hasher.update(block)
            size += len(block)
    return size


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """``path``'s download to this caller alone, until it is done (flock: released by the
    system if the process dies)."""
    if fcntl is None:
        yield
        return
    with path.with_name(path.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
