"""Access control: API keys with scopes, per-key rate limits, and who may open a WebSocket.

One ASGI middleware guards HTTP and WebSockets alike, before any route runs:

- ``/v1/*``, ``/ws/*`` and ``/metrics`` need a key when keys are configured; ``/health``, the web
  pages and their scripts never do (a page must load to ask for a key). Listing models and voices
  is open by ``auth.open_listing``. Admin routes (`ADMIN_ROUTES`: the voice library's deletion,
  import, export, backups and restore; metrics) need an ``admin`` key.
- A key comes as ``Authorization: Bearer KEY``; a browser's WebSocket cannot set headers, so
  there it may also come as the subprotocol ``voxserve.key.KEY`` or the query parameter
  ``api_key``. The query parameter is removed from the request before anything can log it.
- With no keys configured, the ``Authorization`` header is not read at all: clients that send
  ``Bearer undefined`` or an empty bearer (Open WebUI, SDKs with a dummy key) just work.
- Which pages may use the server (``Origin``, ``Host``, preflights, body types) is decided
  before this, by ``cross_site``.
- Requests per minute are counted here; characters per minute where a transport reads the text
  to speak (`charge_characters`), through the caller's identity in a context variable.

Keys are held only as SHA-256 digests; a key never appears in a log line, error or metric, nor
does a password written into a URL.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.config import ApiKey, AuthSettings, ConfigError, Settings
from voxserve.errors import ForbiddenError, RateLimitedError, UnauthorizedError, VoxserveError
from voxserve.net import is_loopback, redact_url
from voxserve.server.errors import refuse

logger = logging.getLogger("voxserve.auth")
router = APIRouter()

KEY_QUERY_PARAMETER = "api_key"
KEY_SUBPROTOCOL_PREFIX = "voxserve.key."
PAGE_SUBPROTOCOL = "voxserve"
"""Offered beside the key subprotocol by the pages: the one the server answers with, so that the
key is not echoed back in the handshake."""
PROTECTED_PREFIXES = ("/v1/", "/ws/", "/metrics", "/dev/")  # /dev/: Kokoro-FastAPI's routes
LISTING_ROUTES = frozenset({"/v1/models", "/v1/audio/models", "/v1/audio/voices"})
ADMIN_ROUTES = (
    ("DELETE", re.compile(r"/v1/audio/voices/.*")),
    ("POST", re.compile(r"/v1/audio/voices/(import|backup|restore)")),
    ("GET", re.compile(r"/v1/audio/voices/(backups|[^/]+/export)")),
    ("GET", re.compile(r"/metrics.*")),
)
"""(method, pattern of the whole path) pairs only an admin key may use: patterns, as a voice's
export has its id in the middle of its path."""
_JUNK_BEARERS = frozenset({"", "undefined", "null", "none"})
_MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a key (by digest and scope) or, without one, an address."""

    identity: str
    scope: str | None
    """``speech`` or ``admin`` for a key; None for an address without one."""
    requests_per_minute: int | None
    characters_per_minute: int | None
    name: str | None = None
    """The key's ``name``, for the operator."""
    monthly_budget_usd: float | None = None

    @property
    def label(self) -> str:
        """Who this is in metrics: the key's name, else a short label no key can be read back
        from (8 hex digits of its digest), else ``anonymous`` (keys are off)."""
        if self.scope is None:
            return "anonymous"
        return self.name or f"key-{self.identity.removeprefix('key:')[:8]}"


_current: contextvars.ContextVar[tuple[Principal, RateLimiter] | None] = contextvars.ContextVar(
    "voxserve_principal", default=None
)


def current_principal() -> Principal | None:
    """Who the request being served comes from; None outside a request (the library, tests)."""
    current = _current.get()
    return current[0] if current else None


def charge_characters(count: int) -> None:
    """Count ``count`` characters of text to speak against the caller's per-minute limit;
    raises RateLimitedError (429) when over it. A no-op outside a request (the library, tests)."""
    current = _current.get()
    if current is not None and count > 0:
        principal, limiter = current
        limiter.take(principal, "characters", principal.characters_per_minute, count)


@contextlib.contextmanager
def acting_for(principal: Principal, limiter: RateLimiter) -> Iterator[None]:
    """Serve what runs inside (and the tasks it starts) as ``principal``'s, counted by
    ``limiter``: for a transport outside the middleware (Wyoming)."""
    token = _current.set((principal, limiter))
    try:
        yield
    finally:
        _current.reset(token)


# --- logs -----------------------------------------------------------------------------------

_KEY_IN_TEXT = re.compile(
    rf"({KEY_QUERY_PARAMETER}=|{re.escape(KEY_SUBPROTOCOL_PREFIX)}|authorization: *bearer +)"
    r"[^\s&,;\"']+",
    re.IGNORECASE,
)
_LOGGERS_WITH_REQUESTS = ("uvicorn.error", "uvicorn.access", "websockets", "httpx")
"""Loggers that print request lines and headers: uvicorn's WebSocket handshake at debug level
prints the whole request, query string and Authorization header included; httpx prints the URL
of every request it makes (to the LLM, to RunPod)."""


class RedactKeys(logging.Filter):
    """Replaces any key in a log record (query parameter, subprotocol, bearer header) and the
    credentials of any URL in it (``http://user:PASS@host``) by ***."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url(_KEY_IN_TEXT.sub(r"\1***", message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_keys_in_logs() -> None:
    """Put `RedactKeys` on the loggers and handlers requests are logged through. Called once
    the server's logging is set up (uvicorn configures its own at start)."""
    loggers = [logging.getLogger(), *map(logging.getLogger, _LOGGERS_WITH_REQUESTS)]
    for target in [*loggers, *(handler for logger in loggers for handler in logger.handlers)]:
        if not any(isinstance(existing, RedactKeys) for existing in target.filters):
            target.addFilter(RedactKeys())


# --- settings -> policy ------------------------------------------------------------------


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_keys_file(path: Path) -> list[ApiKey]:
    """``KEY`` or ``KEY SCOPE`` a line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"auth.api_keys_file {path}: {error.strerror}") from error
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1] not in ("speech", "admin")):
            raise ConfigError(
                f"auth.api_keys_file {path}, line {number}: expected KEY or KEY SCOPE "
                "(scope speech or admin)"
            )
        try:
            keys.append(ApiKey(key=words[0], scope=words[1] if len(words) == 2 else "speech"))
        except ValueError as error:
            raise ConfigError(
                f"auth.api_keys_file {path}, line {number}: an API key needs 8 or more characters"
            ) from error
    return keys


def check_exposure(settings: Settings, keys: list[ApiKey]) -> None:
    """Refuse to serve a non-loopback address with no keys, unless told it is meant."""
    if keys or settings.auth.insecure or is_loopback(settings.host):
        return
    raise ConfigError(
        f"refusing to serve {settings.host} without API keys: anyone who can reach it could use "
        "it. Set auth.api_keys or auth.api_keys_file (VOXSERVE_AUTH__API_KEYS), or pass "
        "--insecure (auth.insecure = true) if that is what you want."
    )


class AccessPolicy:
    """What each path needs, and who a request's credentials make it."""

    def __init__(self, settings: AuthSettings, keys: list[ApiKey]):
        self.settings = settings
        self.keys = {digest(key.key.get_secret_value()): key for key in keys}
        self.limiter = RateLimiter()

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        keys = list(settings.auth.api_keys)
        if settings.auth.api_keys_file is not None:
            keys += read_keys_file(settings.auth.api_keys_file)
        check_exposure(settings, keys)
        return cls(settings.auth, keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def required_scope(self, method: str, path: str) -> str | None:
        """``speech``, ``admin``, or None for an open path."""
        if not path.startswith(PROTECTED_PREFIXES) or path == "/v1/auth":
            return None
        if any(method == m and pattern.fullmatch(path) for m, pattern in ADMIN_ROUTES):
            return "admin"
        if self.settings.open_listing and method == "GET" and path.rstrip("/") in LISTING_ROUTES:
            return None
        return "speech"

    def principal(self, key: str | None, address: str) -> Principal | None:
        """The key's principal; an address's when keys are off; None for a wrong or missing
        key when they are on."""
        auth = self.settings
        if not self.enabled:
            return Principal(
                f"address:{address}", None, auth.requests_per_minute, auth.characters_per_minute
            )
        entry = self.keys.get(digest(key)) if key else None
        if entry is None:
            return None
        return Principal(
            f"key:{digest(entry.key.get_secret_value())[:16]}",
            entry.scope,
            entry.requests_per_minute or auth.requests_per_minute,
            entry.characters_per_minute or auth.characters_per_minute,
            entry.name,
            entry.monthly_budget_usd,
        )


# --- rate limits -------------------------------------------------------------------------


@dataclass
class _Bucket:
    level: float
    updated: float


@dataclass
class RateLimiter:
    """Token buckets, one per principal and kind, refilled continuously to their per-minute
    capacity: a burst of a minute's worth is allowed, then the steady rate."""

    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, principal: Principal, kind: str, per_minute: int | None, amount: int) -> None:
        if per_minute is None:
            return
        now = self.clock()
        # A request bigger than a whole minute's budget waits for a full bucket, then goes.
        needed = min(amount, per_minute)
        with self._lock:
            if len(self._buckets) > _MAX_BUCKETS:
                self._forget_full_buckets(now)
            bucket = self._buckets.setdefault((principal.identity, kind), _Bucket(per_minute, now))
            bucket.level = min(per_minute, bucket.level + (now - bucket.updated) * per_minute / 60)
            bucket.updated = now
            if bucket.level >= needed:
                bucket.level -= amount
                return
            wait = (needed - bucket.level) * 60 / per_minute
        raise RateLimitedError(
            f"over the limit of {per_minute} {kind} per minute; retry in {math.ceil(wait)} s",
            retry_after=max(1, math.ceil(wait)),
            code=f"{kind}_rate_limited",
        )

    def _forget_full_buckets(self, now: float) -> None:
        # A bucket untouched for a minute is full again: the same as none, so many addresses
        # passing by cost no memory.
        for owner, bucket in list(self._buckets.items()):
            if now - bucket.updated >= 60:
                del self._buckets[owner]


# --- the middleware ----------------------------------------------------------------------


class AccessControl:
    """The ASGI middleware; see the module's docstring."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        query_key = _pop_query_key(scope)
        headers = headers_of(scope)
        websocket = scope["type"] == "websocket"
        protocol_key = _subprotocol_key(scope) if websocket else None
        needed = self.policy.required_scope(scope.get("method", "GET"), scope["path"])
        key = protocol_key or query_key or _bearer(headers.get("authorization"))
        client = scope.get("client") or ("unknown", 0)
        principal = self.policy.principal(key, client[0])
        try:
            if needed is not None:
                principal = _authorize(principal, needed, bool(key))
                limiter = self.policy.limiter
                limiter.take(principal, "requests", principal.requests_per_minute, 1)
        except VoxserveError as error:
            if error.status_code == 401:
                logger.warning("refused %s %s from %s: %s", scope.get("method", "WS"),
                               scope["path"], client[0], error.code)  # fmt: skip
            await refuse(scope, send, error)
            return
        token = _current.set((principal, self.policy.limiter) if principal else None)
        try:
            if protocol_key is not None:
                send = _answering_page_subprotocol(send)
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)


def _authorize(principal: Principal | None, needed: str, key_given: bool) -> Principal:
    if principal is None:
        raise UnauthorizedError(
            "the API key is not valid" if key_given else
            "an API key is needed: send Authorization: Bearer KEY",
            code="invalid_api_key",
        )  # fmt: skip
    if needed == "admin" and principal.scope not in (None, "admin"):
        raise ForbiddenError("this needs an admin key", code="insufficient_scope")
    return principal


def headers_of(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else scheme
    return None if token.lower() in _JUNK_BEARERS else token


def _pop_query_key(scope: Scope) -> str | None:
    """Take ``api_key`` out of the query string, in place: the server's access log prints the
    very scope the app gets."""
    raw = scope.get("query_string", b"")
    if KEY_QUERY_PARAMETER.encode() not in raw:
        return None
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    keys = [value for name, value in pairs if name == KEY_QUERY_PARAMETER]
    scope["query_string"] = urlencode(
        [(name, value) for name, value in pairs if name != KEY_QUERY_PARAMETER]
    ).encode("latin-1")
    return keys[-1] if keys and keys[-1] else None


def _subprotocol_key(scope: Scope) -> str | None:
    for protocol in scope.get("subprotocols") or ():
        if protocol.startswith(KEY_SUBPROTOCOL_PREFIX):
            return protocol[len(KEY_SUBPROTOCOL_PREFIX) :] or None
    return None


def _answering_page_subprotocol(send: Send) -> Send:
    """A browser that offered subprotocols fails a handshake that picks none; pick the page's."""

    async def sending(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": PAGE_SUBPROTOCOL}
        await send(message)

    return sending


@router.get("/v1/auth")
async def access(request: Request) -> JSONResponse:
    """Whether this server needs a key, and whether the one sent (if any) is good: the pages
    ask for a key only when they must."""
    policy: AccessPolicy = request.app.state.access_policy
    current = _current.get()
    principal = current[0] if current else None
    return JSONResponse({
        "required": policy.enabled,
        "authorized": principal is not None,
        "scope": principal.scope if principal and policy.enabled else None,
    })  # fmt: skip
