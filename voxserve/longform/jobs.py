"""Audiobooks as jobs: saved in SQLite, run one at a time in the background, resumed after a
restart (``POST /v1/jobs``).

A job is its row in ``<data_dir>/jobs.db`` and its directory ``<data_dir>/jobs/<id>/``: the
uploaded document, the pieces of audio made so far (audiobook.py writes each whole or not at
all), then the book and one file per chapter. A job that was queued or running when the server
stopped (a crash, ``kill -9``) is queued again at start, and goes on from its next unmade piece:
at most the one piece in flight is made again. Jobs run at background priority
(``synthesis.scheduler.background``): live requests get the engines first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voxserve.audio.music_bed import MusicBed
from voxserve.errors import ConflictError, NotFoundError, VoxserveError
from voxserve.longform.audiobook import BookProgress, ChapterDone, render_book
from voxserve.longform.chapters import read_document
from voxserve.request import SpeechOptions
from voxserve.synthesis.scheduler import background
from voxserve.synthesis.synthesizer import Synthesizer

logger = logging.getLogger("voxserve.jobs")
STATES = ("queued", "running", "paused", "done", "failed", "cancelled")
ENDED = ("done", "failed", "cancelled")


@dataclass
class Job:
    id: str
    status: str
    filename: str
    options: dict[str, Any]
    """``speech`` (SpeechOptions' fields), ``response_format``, ``document_format``,
    ``chapter_pattern``, ``loudness``."""
    created_at: float
    progress: dict[str, Any] = field(default_factory=dict)
    chapters: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"object": "job", **asdict(self)}


class JobStore:
    """Jobs' rows; safe to use from several threads (one connection, under a lock)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / "jobs.db", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, created_at REAL, data TEXT)"
        )
        self._db.commit()

    def directory(self, job_id: str) -> Path:
        return self.root / job_id

    def chapter_file(self, job_id: str, number: int) -> Path | None:
        """A chapter's own file: among the pieces from when it is done, in ``chapters/`` once
        the book is."""
        directory = self.directory(job_id)
        for pattern in (f"chapters/{number:02d} *", f"pieces/*/{number:02d} *"):
            if found := sorted(directory.glob(pattern)):
                return found[0]
        return None

    def create(
        self, filename: str, document: bytes, options: dict[str, Any], music: bytes | None = None
    ) -> Job:
        job = Job(uuid.uuid4().hex[:16], "queued", filename, options, time.time())
        directory = self.directory(job.id)
        directory.mkdir(parents=True)
        (directory / "input").write_bytes(document)
        if music is not None:
            (directory / "music").write_bytes(music)
        self.save(job)
        return job

    def save(self, job: Job) -> None:
        data = json.dumps(job.to_dict())
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO jobs (id, created_at, data) VALUES (?, ?, ?)",
                (job.id, job.created_at, data),
            )
            self._db.commit()

    def update_progress(
        self, job_id: str, progress: dict[str, Any], chapters: list[dict[str, Any]]
    ) -> None:
        """Only the progress and the chapters done: a pause or cancel saved meanwhile stands."""
        with self._lock:
            row = self._db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return
            data = json.loads(row[0])
            # Reports are written from worker threads and may arrive out of order: keep the newest.
            if _order(data["progress"]) >= _order(progress):
                return
            data["progress"], data["chapters"] = progress, chapters
            self._db.execute("UPDATE jobs SET data = ? WHERE id = ?", (json.dumps(data), job_id))
            self._db.commit()

    def get(self, job_id: str) -> Job:
        with self._lock:
            row = self._db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r}", param="job_id", code="job_not_found")
        data = json.loads(row[0])
        data.pop("object")
        return Job(**data)

    def list(self) -> list[Job]:
        with self._lock:
            ids = [row[0] for row in self._db.execute("SELECT id FROM jobs ORDER BY created_at")]
        return [self.get(job_id) for job_id in ids]

    def delete(self, job_id: str) -> None:
        self.get(job_id)
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            self._db.commit()
        shutil.rmtree(self.directory(job_id), ignore_errors=True)

    def close(self) -> None:
        self._db.close()


def _order(progress: dict[str, Any]) -> tuple[int, int]:
    return progress.get("pieces_done", -1), progress.get("chapters_done", -1)


class JobRunner:
    """Runs queued jobs one after another; tells listeners of every change."""

    def __init__(self, synthesizer: Synthesizer, store: JobStore) -> None:
        self.synthesizer = synthesizer
        self.store = store
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._running: dict[str, asyncio.Task] = {}
        self._changed = asyncio.Condition()
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        """Run in the background; jobs left queued or running by the last server go on."""
        for job in self.store.list():
            if job.status in ("queued", "running"):
                self._queue.put_nowait(job.id)
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def submit(
        self, filename: str, document: bytes, options: dict[str, Any], music: bytes | None = None
    ) -> Job:
        job = await asyncio.to_thread(self.store.create, filename, document, options, music)
        await self._queue.put(job.id)
        return job

    async def pause(self, job_id: str) -> Job:
        return await self._stop(job_id, "paused", ("queued", "running"))

    async def cancel(self, job_id: str) -> Job:
        job = await self._stop(job_id, "cancelled", ("queued", "running", "paused"))
        await asyncio.to_thread(shutil.rmtree, self.store.directory(job_id) / "pieces", True)
        job.chapters = []  # their files went with the pieces
        await self._save(job)
        return job

    async def resume(self, job_id: str) -> Job:
        job = await self._set(job_id, "queued", ("paused", "failed"))
        await self._queue.put(job_id)
        return job

    async def events(self, job_id: str) -> AsyncIterator[Job]:
        """The job now, then again at each change, until it has ended or is paused."""
        while True:
            job = await asyncio.to_thread(self.store.get, job_id)
            yield job
            if job.status in (*ENDED, "paused"):
                return
            async with self._changed:
                await self._changed.wait()

    async def _stop(self, job_id: str, status: str, allowed: tuple[str, ...]) -> Job:
        job = await self._set(job_id, status, allowed)
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        return job

    async def _set(self, job_id: str, status: str, allowed: tuple[str, ...]) -> Job:
        job = await asyncio.to_thread(self.store.get, job_id)
        if job.status not in allowed:
            raise ConflictError(
                f"the job is {job.status}: it can be made {status} only when "
                f"{' or '.join(allowed)}",
                param="job_id",
                code="job_state",
            )
        job.status = status
        await self._save(job)
        return job

    async def _save(self, job: Job) -> None:
        await asyncio.to_thread(self.store.save, job)
        async with self._changed:
            self._changed.notify_all()

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            job = await asyncio.to_thread(self.store.get, job_id)
            if job.status != "queued" and job.status != "running":
                continue  # paused or cancelled while it waited
            task = asyncio.get_running_loop().create_task(self._run(job))
            self._running[job_id] = task
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._running.pop(job_id, None)

    async def _run(self, job: Job) -> None:
        directory = self.store.directory(job.id)
        options = job.options
        job.status, job.error, job.chapters = "running", None, []
        await self._save(job)
        started = time.monotonic()

        async def report(progress: BookProgress) -> None:
            elapsed = time.monotonic() - started
            left = progress.pieces_total - progress.pieces_done
            # From the pieces this run spoke: those a stopped run made took it no time.
            made = progress.pieces_made
            job.progress = {
                **asdict(progress),
                "eta_seconds": round(elapsed / made * left, 1) if made else None,
            }
            chapters = list(job.chapters)  # as they are at this report
            await asyncio.to_thread(self.store.update_progress, job.id, job.progress, chapters)
            async with self._changed:
                self._changed.notify_all()

        pending: set[asyncio.Task] = set()

        def on_chapter(chapter: ChapterDone) -> None:  # told before the progress that counts it
            job.chapters.append(
                {"number": chapter.number, "title": chapter.title, "start": round(chapter.start, 3),
                 "seconds": round(chapter.seconds, 3)}
            )  # fmt: skip

        def on_progress(progress: BookProgress) -> None:
            task = asyncio.get_running_loop().create_task(report(progress))
            pending.add(task)
            task.add_done_callback(pending.discard)

        token = background.set(True)
        try:
            document = await asyncio.to_thread(
                read_document, (directory / "input").read_bytes(), job.filename,
                document_format=options.get("document_format"),
                chapter_pattern=options.get("chapter_pattern"),
            )  # fmt: skip
            file_format = options["response_format"]
            music = None
            if options.get("music") is not None:
                music_file = await asyncio.to_thread((directory / "music").read_bytes)
                music = (music_file, MusicBed(**options["music"]))
            await render_book(
                self.synthesizer, document, SpeechOptions(**options["speech"]),
                directory / f"book.{file_format}", directory / "pieces",
                file_format=file_format, loudness=options.get("loudness"),
                chapters_dir=directory / "chapters", music=music, progress=on_progress,
                chapter_done=on_chapter,
            )  # fmt: skip
            await asyncio.gather(*pending)
            job.status = "done"
        except VoxserveError as error:
            job.status, job.error = "failed", error.message
        except Exception as error:  # an engine's or the disk's: this job fails, not the server
            logger.exception("job %s failed", job.id)
            job.status, job.error = "failed", f"{type(error).__name__}: {error}"
        finally:
            background.reset(token)
            for task in pending:
                task.cancel()
        await self._save(job)
