"""Errors voxserve raises, and the one place that says what each means to a client.

    VoxserveError                  base; carries message, param, code and an HTTP status
    ├── InvalidRequestError        400: the request is wrong (bad field, engine can't honour it)
    ├── UnauthorizedError          401: no API key, or not a valid one
    ├── ForbiddenError             403: a key without the scope, or a WebSocket's foreign origin
    ├── NotFoundError              404: unknown voice, model or resource
    ├── ConflictError              409: a name already taken
    ├── PayloadTooLargeError       413: a request body over the limit
    ├── RateLimitedError           429: over a per-key limit; carries retry_after seconds
    │   └── OverloadedError        429: the engine's queue is full
    ├── EngineUnavailableError     503: an engine's extra is not installed or its model is missing
    ├── EngineError                500: an engine failed while synthesizing
    └── LLMError (chat/llm.py)     502: the chat LLM failed or is unreachable; has ``retryable``

Transports translate these (HTTP: OpenAI's error shape; WebSocket: a JSON error message);
third-party errors are translated where they are caught, with ``raise ... from``. Anything else
reaching a transport is a bug: ``as_client_error`` logs it with its traceback and makes it an
``internal_error`` for the client.
"""

from __future__ import annotations

import logging


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


class RateLimitedError(VoxserveError):
    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: int, code: str = "rate_limited"):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class OverloadedError(RateLimitedError):
    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message, retry_after=retry_after, code="overloaded")


class EngineUnavailableError(VoxserveError):
    status_code = 503
    error_type = "engine_unavailable"


class EngineError(VoxserveError):
    status_code = 500
    error_type = "engine_error"


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
