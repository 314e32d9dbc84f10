"""Errors as HTTP responses (OpenAI's error shape, its status, retry headers; never a traceback).

What a client is told of any exception is `voxserve.streaming.client_error`'s, the same for every
transport; this module gives it HTTP's shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxserve.errors import InvalidRequestError, VoxserveError, invalid_fields, storage_error
from voxserve.server.metrics import route_of
from voxserve.streaming import ClientError, client_error

logger = logging.getLogger("voxserve.server")


def retry_headers(status: int, code: str | None = None) -> dict[str, str]:
    """``x-should-retry: false`` on a refusal that the same request would get again.

    OpenAI's SDKs retry 408, 409, 429 and 5xx answers unless this header says not to; ours are
    validation errors (a 409 here is a name already taken), so retrying only adds latency. Busy
    (429) and server errors are left to the client's retry policy, but for a full disk (507),
    which stays full while the client retries, and a spent budget (429 ``insufficient_quota``),
    spent until the month turns.
    """
    if (400 <= status < 500 and status != 429) or status == 507 or code == "insufficient_quota":
        return {"x-should-retry": "false"}
    return {}


def error_response(error: Exception) -> JSONResponse:
    """The answer for ``error``: told as it is, or, a bug, logged and told as ``internal_error``."""
    told = client_error(error, logger, "answering a request")
    headers = retry_headers(told.status, told.code)
    if told.retry_after is not None:
        headers["Retry-After"] = str(told.retry_after)
    return JSONResponse(told.body(), status_code=told.status, headers=headers)


async def refuse(scope: Scope, send: Send, error: VoxserveError, *, close: bool = False) -> None:
    """Answer an HTTP request or a WebSocket handshake with ``error``, from a middleware, before
    any route (``close``: the connection is closed after it). A WebSocket server that cannot
    answer a handshake with HTTP gets a close instead: 1013, try again later, for what passes
    (429, 503); 1008, policy violation, for the rest."""
    response = error_response(error)
    if close:
        response.headers["connection"] = "close"
    if error.status_code == 401:
        response.headers["www-authenticate"] = "Bearer"
    if scope["type"] == "http":
        start = "http.response.start"
    elif "websocket.http.response" in scope.get("extensions", {}):
        start = "websocket.http.response.start"  # the handshake answered with our JSON error
    else:
        passing = error.status_code in (429, 503)
        code, reason = (1013, "try again later") if passing else (1008, "")
        await send({"type": "websocket.close", "code": code, "reason": reason})
        return
    await send({"type": start, "status": error.status_code, "headers": response.raw_headers})
    await send({"type": start.replace(".start", ".body"), "body": response.body})


def validation_error(error: ValidationError | RequestValidationError) -> InvalidRequestError:
    """The first problem pydantic found, naming the field."""
    return invalid_fields(error.errors())


def count_error(app: FastAPI, scope: Scope, code: str) -> None:
    app.state.metrics.errors.labels(route_of(scope), code).inc()


def client_gone(websocket: WebSocket, error: BaseException | None = None) -> bool:
    """Whether a WebSocket's client has left, ``error`` being what a send to it raised: then there
    is nobody to tell, and nothing to report (after a first failed send, starlette raises a plain
    RuntimeError on the next)."""
    return isinstance(error, WebSocketDisconnect) or WebSocketState.DISCONNECTED in (
        websocket.client_state, websocket.application_state,
    )  # fmt: skip


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VoxserveError)
    async def _voxserve_error(request: Request, error: VoxserveError) -> JSONResponse:
        if error.status_code >= 500:
            logger.error("%s", error.message, exc_info=error.__cause__)
        count_error(request.app, request.scope, error.code or error.error_type)
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, error: RequestValidationError) -> JSONResponse:
        count_error(request.app, request.scope, "invalid_request")
        return error_response(validation_error(error))

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, error: HTTPException) -> JSONResponse:
        status = error.status_code
        kind = "invalid_request_error" if status < 500 else "server_error"
        told = ClientError(status, kind, str(status), str(error.detail))
        headers = {**retry_headers(status), **(getattr(error, "headers", None) or {})}
        return JSONResponse(told.body(), status_code=status, headers=headers)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, error: OSError) -> JSONResponse:
        # A full disk met anywhere (a spooled upload, a temporary file) is a 507, not a bug. Only
        # a full one: here a permission error may as well be a read, and stays unexpected.
        refusal = storage_error(error, "the request's data")
        if refusal is None or refusal.code != "insufficient_storage":
            raise error  # on to the handler of unexpected errors
        refusal.__cause__ = error
        return await _voxserve_error(request, refusal)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        response = error_response(error)  # logged there, with its traceback
        # Starlette re-raises the exception once this answer is sent, and the server then drops
        # the connection: saying so keeps a client from sending its next request down it.
        response.headers["Connection"] = "close"
        return response
