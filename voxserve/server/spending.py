"""What each API key spends on paid engines, per calendar month (UTC), and its monthly budget.

Spending is recorded as the synthesizer bills each segment (``ServerMetrics.billed`` asks
`Spending.charge` who pays), kept in ``spending.db`` in the data directory so that a restart
forgets nothing. A request is checked against its key's ``monthly_budget_usd`` with its estimate
before anything is spent (`Spending.check`): over it, a 429 ``insufficient_quota``.

A request that passes holds its estimate until it ends (`HoldSpending`, the middleware that
scopes holds to a request or WebSocket connection): requests running at once count each other's
estimates, so twenty of them started together cannot each pass on the same remaining budget. As
the request's segments are billed, the bill replaces that much of its hold.

The month's totals are held in memory as well, loaded at start: checking a budget reads no file,
and the event loop never waits on SQLite (writes go to a thread of their own, in order). One
server process owns a data directory's spending.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from voxserve.errors import InsufficientQuotaError
from voxserve.server.auth import Principal, current_principal
from voxserve.synthesis.cost import estimate, total_usd
from voxserve.synthesis.plan import Segment

logger = logging.getLogger("voxserve.server")
DATABASE_FILE = "spending.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS spending (
    payer TEXT NOT NULL,
    month TEXT NOT NULL,
    usd REAL NOT NULL,
    PRIMARY KEY (payer, month)
)
"""


def this_month(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m")


def dollars(usd: float) -> str:
    """Cents from a dollar up; below, the fractions of a cent a cloud engine's request costs."""
    return f"${usd:.2f}" if usd >= 1 else f"${usd:.6f}"


def next_month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


@dataclass
class Hold:
    """A request's estimate, counted against its payer's budget until the request ends."""

    payer: str
    usd: float
    """What is still held: the estimate less what the request has been billed."""


_request_holds: contextvars.ContextVar[list[Hold] | None] = contextvars.ContextVar(
    "voxserve_spending_holds", default=None
)


def _open(path: Path | str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False)
    with db:
        db.execute(SCHEMA)
    return db


class Spending:
    """Per key (by its identity: a part of its digest, never the key), per month."""

    def __init__(self, data_dir: Path):
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._db = _open(data_dir / DATABASE_FILE)
        except (OSError, sqlite3.Error) as error:
            # Speech is still served (as the voice store serves it read-only): budgets then
            # hold only until a restart, and the operator is told.
            logger.warning("cannot keep spending in %s (%s): in memory only", data_dir, error)
            self._db = _open(":memory:")
        month = this_month()
        rows = self._db.execute("SELECT payer, usd FROM spending WHERE month = ?", (month,))
        self._totals: dict[tuple[str, str], float] = {(payer, month): usd for payer, usd in rows}
        self._held: dict[str, float] = {}
        """Per payer: what the requests still running hold (`Hold`)."""
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="voxserve-spending")

    def spent(self, principal: Principal) -> float:
        """What ``principal`` has spent this month, in USD."""
        with self._lock:
            return self._totals.get((principal.identity, this_month()), 0.0)

    def check(self, usd: float) -> None:
        """Refuse (429 ``insufficient_quota``) a request estimated at ``usd`` that would take the
        caller past its key's monthly budget. A no-op without a caller or budget."""
        principal = current_principal()
        budget = principal.monthly_budget_usd if principal else None
        if principal is None or budget is None or usd <= 0:
            return
        payer = principal.identity
        with self._lock:
            spent = self._totals.get((payer, this_month()), 0.0)
            held = self._held.get(payer, 0.0)
            if spent + held + usd <= budget:
                holds = _request_holds.get()
                if holds is not None:  # outside a request (tests, the library): nothing to hold
                    holds.append(Hold(payer, usd))
                    self._held[payer] = held + usd
                return
        resets = next_month_start().strftime("%Y-%m-%d 00:00 UTC")
        running = f", and requests running now hold {dollars(held)} more" if held > 0 else ""
        raise InsufficientQuotaError(
            f"this request is estimated at {dollars(usd)}, and this key has spent "
            f"{dollars(spent)} of its monthly budget of {dollars(budget)}{running}; the budget "
            f"resets on {resets}"
        )

    def charge(self, usd: float) -> str:
        """Record ``usd`` spent by the caller (of the request being served); its label for the
        metrics (`Principal.label`)."""
        principal = current_principal()
        if principal is None:
            return "anonymous"
        if principal.scope is not None and usd > 0:  # a key: spending is per key
            month = this_month()
            with self._lock:
                owner = (principal.identity, month)
                self._totals[owner] = self._totals.get(owner, 0.0) + usd
                self._settle(principal.identity, usd)
            self._writer.submit(self._record, principal.identity, month, usd)
        return principal.label

    def _settle(self, payer: str, usd: float) -> None:
        """A bill of ``usd`` replaces as much of the request's holds (lock held)."""
        for hold in _request_holds.get() or ():
            if usd <= 0:
                return
            if hold.payer == payer and hold.usd > 0:
                taken = min(hold.usd, usd)
                hold.usd -= taken
                usd -= taken
                self._held[payer] -= taken

    def release(self, holds: Iterable[Hold]) -> None:
        """A request has ended: what its holds kept back is free again."""
        with self._lock:
            for hold in holds:
                remaining = self._held.get(hold.payer, 0.0) - hold.usd
                if remaining > 1e-12:
                    self._held[hold.payer] = remaining
                else:
                    self._held.pop(hold.payer, None)
                hold.usd = 0.0

    def _record(self, payer: str, month: str, usd: float) -> None:
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO spending (payer, month, usd) VALUES (?, ?, ?) "
                    "ON CONFLICT (payer, month) DO UPDATE SET usd = usd + excluded.usd",
                    (payer, month, usd),
                )
        except sqlite3.Error:  # kept in memory still: budgets hold until a restart
            logger.exception("could not record spending in %s", DATABASE_FILE)

    def close(self) -> None:
        """After every recorded charge is written."""
        self._writer.shutdown(wait=True)
        self._db.close()


class HoldSpending:
    """ASGI middleware: the budget holds a request (or a WebSocket connection) takes are its
    own, and released when it ends, however it ends."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with holding(lambda: scope["app"].state.spending):
            await self.app(scope, receive, send)


@contextlib.contextmanager
def holding(spending: Callable[[], Spending]) -> Iterator[None]:
    """The budget holds taken inside (by a request, a WebSocket or a Wyoming connection) are its
    own, and released when it ends, however it ends. ``spending`` is asked for only then (an
    app's is made in its lifespan, after its middlewares)."""
    holds: list[Hold] = []
    token = _request_holds.set(holds)
    try:
        yield
    finally:
        _request_holds.reset(token)
        if holds:
            spending().release(holds)


def check_budget(app: FastAPI, segments: Iterable[Segment]) -> None:
    """Refuse a request whose planned ``segments`` would take its key past the month's budget."""
    app.state.spending.check(total_usd(estimate(segments)))
