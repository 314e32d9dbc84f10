"""How a download shows its progress: a callback given to ``download``, else the process's
reporter, which the CLI sets to a rich bar on its terminal (engines download as they load, deep
below the command that needs them). No reporter, no bar: the server logs its downloads."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

ProgressCallback = Callable[[int, int | None], None]
"""``(bytes done, bytes in all)``; the total is None when the server does not say."""
Reporter = Callable[[str], AbstractContextManager[ProgressCallback | None]]
"""A file's name -> a context holding the callback for its download (None: not shown)."""

_reporter: Reporter | None = None


def report_with(reporter: Reporter | None) -> None:
    """Show every download without a callback of its own through ``reporter`` (None: none)."""
    global _reporter
    _reporter = reporter


def reporting(name: str) -> AbstractContextManager[ProgressCallback | None]:
    """The process's reporter for a download of ``name``."""
    return _reporter(name) if _reporter is not None else contextlib.nullcontext()


@contextlib.contextmanager
def terminal_bar(name: str, console: Console) -> Iterator[ProgressCallback | None]:
    """A rich bar on ``console`` for one download; none when it is not a terminal (a log)."""
    if not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn(f"downloading {name}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(name, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update
