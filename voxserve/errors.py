"""Errors voxserve raises, and the one place that says what each means to a client.

    VoxserveError                  base; carries message, param, code and an HTTP status
    ├── InvalidRequestError        400: the request is wrong (bad field, engine can't honour it)
    ├── UnauthorizedError          401: no API key, or not a valid one
    ├── ForbiddenError             403: a key without the scope, or a foreign web origin
    ├── NotFoundError              404: unknown voice, model or resource
    ├── ConflictError              409: a name already taken
    ├── PayloadTooLargeError       413: a request body over the limit
    ├── UnsupportedMediaTypeError  415: a body of a type the route does not take
    ├── RequestTimeoutError        408: a request's body stopped coming
    ├── RateLimitedError           429: over a per-key limit; carries retry_after seconds
    │   └── OverloadedError        429: the engine's queue is full
    ├── EngineUnavailableError     503: an engine's extra is not installed or its model is missing
    ├── InsufficientStorageError   507: the disk is full, or the voice store is read-only
    ├── EngineError                500: an engine failed while synthesizing; has ``retryable``
    │   │                          and ``retry_after`` (what the provider asked to wait)
    │   ├── UpstreamError          502: a remote provider failed (a 5xx, no connection)
    │   │   └── UpstreamRateLimitedError  429: the provider's own 429, after our retries
    │   └── NoAudioError           no audio of a segment: 400 for text the engine cannot speak,
    │                              500 for an engine that samples (another try may speak)
    └── LLMError (chat/llm.py)     502: the chat LLM failed or is unreachable; has ``retryable``

Transports translate these (HTTP: OpenAI's error shape; WebSocket: a JSON error message);
third-party errors are translated where they are caught, with ``raise ... from``. Anything else
reaching a transport is a bug: ``as_client_error`` logs it with its traceback and makes it an
``internal_error`` for the client.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any


class VoxserveError(Exception):
    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_dict(self) -> dict:
        """OpenAI's error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(VoxserveError):
    status_code = 400
    error_type = "invalid_request_error"


class UnauthorizedError(VoxserveError):
    status_code = 401
    error_type = "invalid_request_error"


class ForbiddenError(VoxserveError):
    status_code = 403
    error_type = "invalid_request_error"


class NotFoundError(VoxserveError):
    status_code = 404
    error_type = "invalid_request_error"


class ConflictError(VoxserveError):
    status_code = 409
    error_type = "invalid_request_error"


class PayloadTooLargeError(VoxserveError):
    status_code = 413
    error_type = "invalid_request_error"


class UnsupportedMediaTypeError(VoxserveError):
    status_code = 415
    error_type = "invalid_request_error"


class RequestTimeoutError(VoxserveError):
    status_code = 408
    error_type = "invalid_request_error"


class RateLimitedError(VoxserveError):
    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: int, code: str = "rate_limited"):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class InsufficientQuotaError(VoxserveError):
    """A key's monthly budget would be exceeded: OpenAI's 429 for a spent quota, which the same
    request meets again until the month turns (not retried)."""

    status_code = 429
    error_type = "insufficient_quota"

    def __init__(self, message: str):
        super().__init__(message, code="insufficient_quota")


class OverloadedError(RateLimitedError):
    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message, retry_after=retry_after, code="overloaded")


class EngineUnavailableError(VoxserveError):
    status_code = 503
    error_type = "engine_unavailable"


class InsufficientStorageError(VoxserveError):
    status_code = 507
    error_type = "server_error"


class EngineError(VoxserveError):
    status_code = 500
    error_type = "engine_error"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None,
        retryable: bool = False, retry_after: float | None = None,
    ):  # fmt: skip
        super().__init__(message, param=param, code=code)
        self.retryable = retryable
        """A passing failure (a dropped connection, a busy upstream): the engine tries again
        while no audio of the segment has gone out."""
        self.retry_after = retry_after
        """Seconds the provider asked us to wait (its ``Retry-After``); None: it did not say."""


class UpstreamError(EngineError):
    """A remote provider failed: an error answer of its own, or no answer at all."""

    status_code = 502
    error_type = "upstream_error"


class UpstreamRateLimitedError(UpstreamError):
    """The provider's own 429. Tried again after its ``Retry-After``; once the retries are spent
    the client gets a 429 with the wait the provider asked for."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, code: str, retry_after: float | None):
        super().__init__(message, code=code, retryable=True, retry_after=retry_after)


class NoAudioError(EngineError):
    """An engine made no audio of a segment. An engine that samples may speak it on another try
    (the engine failed: 500); one that does not would make the same nothing of it again, so the
    text is what it cannot speak (a 400, which clients do not retry)."""

    def __init__(self, engine: str, *, unspeakable: bool):
        if unspeakable:
            super().__init__(
                f"engine {engine!r} made no audio of this input: it cannot speak its characters",
                param="input",
                code="unspeakable_input",
            )
            self.status_code, self.error_type = 400, "invalid_request_error"
        else:
            super().__init__(f"engine {engine!r} produced no audio", code="no_audio")
            self.error_type = "engine_error"


def as_client_error(error: Exception, logger: logging.Logger, doing: str) -> VoxserveError:
    """What to tell a client about ``error``, raised while ``doing`` something for it.

    A VoxserveError is told as it is. Anything else is a bug: it is logged with its traceback
    and told as ``internal_error``, never with its details, so that a background task that meets
    one reports it instead of ending silently.
    """
    if isinstance(error, VoxserveError):
        return error
    logger.error("unexpected error while %s", doing, exc_info=error)
    internal = VoxserveError(
        f"internal error while {doing} (see the server's log)", code="internal_error"
    )
    internal.__cause__ = error
    return internal


def invalid_fields(problems: Sequence[Mapping[str, Any]]) -> InvalidRequestError:
    """The first of pydantic's problems (``ValidationError.errors()``) as a 400 naming its field:
    one wording for the server and for the client, which checks a request before sending it."""
    first = problems[0]
    location = [str(part) for part in first["loc"] if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    message = first["msg"].removeprefix("Value error, ")
    return InvalidRequestError(f"{param}: {message}" if param else message, param=param)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def storage_error(error: BaseException, what: str) -> InsufficientStorageError | None:
    """What to tell a client when ``error``, raised while saving ``what``, says that the disk is
    full or cannot be written (an OSError, or SQLite's "database or disk is full"); None for any
    other error, which stays the bug it is. Only the system's reason is told, never a path."""
    if isinstance(error, OSError):
        reason = error.strerror or str(error)
        full, not_writable = error.errno in _DISK_FULL, error.errno in _NOT_WRITABLE
    elif isinstance(error, sqlite3.Error):
        reason = str(error)
        primary = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF  # extended code's base
        full = primary == sqlite3.SQLITE_FULL
        not_writable = primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN)
    else:
        return None
    if full:
        return InsufficientStorageError(
            f"the server's disk is full ({reason}): {what} cannot be saved until space is freed",
            code="insufficient_storage",
        )
    if not_writable:
        return InsufficientStorageError(
            f"the server cannot write {what} ({reason})", code="store_read_only"
        )
    return None
