"""What a web page elsewhere must not do with a server it can reach (the user's own, on loopback).

A browser lets any page send requests to any address and, for "simple" requests (a form's POST,
a ``text/plain`` body), does not ask the server first; it only keeps the answer from the page.
A page can also point its own DNS name at 127.0.0.1 (DNS rebinding) and become, to the browser,
the same origin as the server. So one ASGI middleware, before access control and every route,
for HTTP and WebSockets alike:

- ``Host`` must be a name of this server (`SitePolicy.host_allowed`), or 400 ``host_not_allowed``.
- A page of another origin than the server's own or one in ``auth.cors_origins`` may send reads
  (GET, HEAD), whose answers the browser keeps from it, but nothing that changes state (POST, PUT,
  PATCH, DELETE) and no WebSocket (browsers apply no CORS to WebSockets): 403
  ``origin_not_allowed``. Clients that are not browsers send no ``Origin`` and are not affected.
- CORS preflights are answered here: with the allow headers for an allowed origin, with none (403)
  for another. Answers to an allowed origin carry ``Access-Control-Allow-Origin``.
- A body of a type a page can send without a preflight (``text/plain``, a urlencoded form,
  multipart) gets 415 on the API's JSON routes; multipart only where a route takes an upload.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.config import Settings
from voxserve.errors import (
    ForbiddenError,
    InvalidRequestError,
    UnsupportedMediaTypeError,
    VoxserveError,
)
from voxserve.server.auth import headers_of
from voxserve.server.errors import refuse

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SIMPLE_BODY_TYPES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)
"""Content types a page may send cross-site without a preflight (the Fetch standard's)."""
UPLOAD_ROUTES = (
    ("POST", re.compile(r"/v1/audio/speech(/estimate)?")),
    ("POST", re.compile(r"/v1/audio/voices(/import|/import-folder)?")),
    ("PATCH", re.compile(r"/v1/audio/voices/[^/]+")),
    ("POST", re.compile(r"/v1/jobs")),
    ("POST", re.compile(r"/v1/audio/dialogue")),
)
"""(method, whole path) of the routes that take a multipart upload: a clip to clone, a voice's
reference, a voice package, a book, a music bed. Every other body under /v1/ is JSON."""
EXPOSED_HEADERS = "X-Sample-Rate, X-Engine, X-Voice, X-Timing-Url, X-Ignored-Fields, Retry-After"
PREFLIGHT_MAX_AGE = "600"


class SitePolicy:
    """Which names the server answers to, and which pages may use it."""

    def __init__(self, settings: Settings, keys_required: bool):
        auth = settings.auth
        self.any_origin = "*" in auth.cors_origins
        self.origins = {origin.rstrip("/") for origin in auth.cors_origins}
        # With keys, a rebound page gains nothing (it has no key): any name, unless the operator
        # lists them. Without keys the name is the only thing telling a rebound page apart.
        self.any_host = "*" in auth.allowed_hosts or (keys_required and not auth.allowed_hosts)
        own = socket.gethostname().lower()
        self.hosts = {_hostname(name) for name in auth.allowed_hosts} | {
            "localhost",
            settings.host.lower().strip("[]"),
            own,
            f"{own}.local",
        }

    def host_allowed(self, host: str | None) -> bool:
        """Whether ``host`` (a ``Host`` header) names this server. IP addresses and localhost
        always do: a page elsewhere cannot be served from those names."""
        if self.any_host or host is None:  # no Host: HTTP/1.0, not a browser
            return True
        name = _hostname(host)
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in self.hosts or name.endswith(".localhost")

    def origin_allowed(self, origin: str, hosts: tuple[str | None, ...]) -> bool:
        """Whether a page of ``origin`` may use the server, where ``hosts`` are the names the
        request was sent to (``Host``, and a proxy's ``X-Forwarded-Host``): the server's own
        pages, and those of ``auth.cors_origins``."""
        if self.any_origin or origin.rstrip("/") in self.origins:
            return True
        netloc = urlsplit(origin).netloc.lower()
        return any(host is not None and netloc == host.lower() for host in hosts)


class CrossSiteGuard:
    """The ASGI middleware; see the module's docstring."""

    def __init__(self, app: ASGIApp, policy: SitePolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = headers_of(scope)
        origin = headers.get("origin")
        host = headers.get("host")
        allowed = origin is None or self.policy.origin_allowed(
            origin, (host, headers.get("x-forwarded-host"))
        )
        method = scope.get("method", "GET")
        preflight = method == "OPTIONS" and "access-control-request-method" in headers
        try:
            if not self.policy.host_allowed(host):
                raise InvalidRequestError(
                    f"this server is not {_hostname(host or '')[:100]!r}: add the name to "
                    "auth.allowed_hosts to reach it by that name",
                    code="host_not_allowed",
                )
            websocket = scope["type"] == "websocket"
            if not allowed and (websocket or preflight or method in STATE_CHANGING):
                raise ForbiddenError(
                    "pages of this origin may not use this server; add it to auth.cors_origins",
                    code="origin_not_allowed",
                )
            json_route = scope["path"].startswith(("/v1/", "/dev/"))
            if not websocket and method in STATE_CHANGING and json_route:
                _check_body_type(method, scope["path"].rstrip("/"), headers.get("content-type"))
        except VoxserveError as error:
            await refuse(scope, send, error)
            return
        if origin is not None and preflight:
            await _preflight(origin, headers)(scope, receive, send)
            return
        if origin is not None and allowed and scope["type"] == "http":
            send = _allowing(origin, send)
        await self.app(scope, receive, send)


def _check_body_type(method: str, path: str, content_type: str | None) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in SIMPLE_BODY_TYPES:
        return
    if media_type == "multipart/form-data" and any(
        method == upload_method and route.fullmatch(path) for upload_method, route in UPLOAD_ROUTES
    ):
        return
    raise UnsupportedMediaTypeError(
        f"this route takes a JSON body, not {media_type}: send Content-Type: application/json",
        code="unsupported_media_type",
    )


def _hostname(host: str) -> str:
    """The name in a ``Host`` header, without its port: ``[::1]:8880`` -> ``::1``."""
    name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
    return name.lower().rstrip(".")


def _preflight(origin: str, headers: dict[str, str]) -> Response:
    allow = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        "Vary": "Origin",
    }
    if "access-control-request-headers" in headers:  # any header: keys come as one
        allow["Access-Control-Allow-Headers"] = headers["access-control-request-headers"]
    return Response(status_code=200, headers=allow)


def _allowing(origin: str, send: Send) -> Send:
    """``send`` with the CORS headers that let a page of ``origin`` read the answer."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            headers.add_vary_header("Origin")
        await send(message)

    return sending
