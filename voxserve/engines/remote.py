"""What every engine on a remote provider shares: its key, its connection, its failures.

- ``api_key``: the key from the engine's settings, else the provider's own environment variable,
  else an error naming both.
- ``PerLoop``: one client (httpx, or a provider's SDK) per event loop. A client's connections
  belong to the loop they were opened on, and the library API runs a loop per call.
- ``refusal`` and ``unreachable``: a provider's error answer, or no answer, as ours. Only passing
  failures are ``retryable`` (no connection, 408, 409, 429, 5xx), so that ``Engine.stream`` tries
  again, after the provider's ``Retry-After`` or its own backoff, and only while none of the
  segment's audio has gone out: a retry never bills twice for audio a client heard. A refused key
  names the setting that holds it; a refused field names ours.
- ``redact``: no message made here carries a key, even one a provider echoed back.

Closing a stream (a client that went away) closes the provider's response, and with it the
connection: the provider stops work it would bill for.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from pydantic import SecretStr

from voxserve.errors import (
    EngineUnavailableError,
    InvalidRequestError,
    UpstreamError,
    UpstreamRateLimitedError,
    VoxserveError,
)
from voxserve.net import redact_url, scrub

PASSING_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
"""What a provider answers when the same request may succeed a moment later."""

Client = TypeVar("Client")


def api_key(engine: str, configured: SecretStr | None, environment: str) -> str:
    """The engine's key: ``[engines.NAME] api_key``, else the provider's variable."""
    key = configured.get_secret_value() if configured else os.environ.get(environment, "")
    if not key:
        raise EngineUnavailableError(
            f"the {engine} engine needs an API key: set [engines.{engine}] api_key "
            f"(VOXSERVE_ENGINES__{engine.upper()}__API_KEY) or {environment}",
            code="engine_not_configured",
        )
    return key


def key_setting(engine: str, environment: str | None) -> str:
    """Where the key a provider refused comes from, in words for its error."""
    where = f"[engines.{engine}] api_key"
    return f"{where} or {environment}" if environment else where


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret in it, and anything shaped like a key, replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return scrub(text)


class PerLoop(Generic[Client]):
    """One client per running event loop, made by ``make`` and closed by ``close`` on its own
    loop when another loop needs one, or when the engine unloads."""

    def __init__(
        self,
        make: Callable[[], Client],
        close: Callable[[Client], Awaitable[Any]],
    ):
        self._make = make
        self._close = close
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> Client:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self.drop()
            self._client, self._loop = self._make(), loop
        return self._client

    def drop(self) -> None:
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if client is not None and loop is not None and loop.is_running():
            # Closed on its own loop (unload runs in a worker thread); a stopped loop took its
            # connections with it.
            asyncio.run_coroutine_threadsafe(self._close(client), loop)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a provider asked to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or an
    HTTP date); None when it said nothing usable."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        value = lowered.get("retry-after")
        if value is None:
            return None
        if value.strip().replace(".", "", 1).isdigit():
            return float(value)
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def refusal(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes | str | Any,
    *,
    engine: str,
    key_from: str,
    fields: Mapping[str, str] = {},
    secrets: Iterable[str] = (),
) -> VoxserveError:
    """A provider's error answer as ours.

    ``fields`` maps the provider's request fields to ours (``voice_id`` -> ``voice``), so that a
    field it refuses is named as the client knows it; ``key_from`` names where the key is set.
    """
    secrets = tuple(secrets)
    detail = provider_detail(body)
    said = f": {redact(detail.message, secrets)}" if detail.message else ""
    reason = f"HTTP {status} {httpx.codes.get_reason_phrase(status)}".rstrip()
    if status in (401, 403):
        return EngineUnavailableError(
            f"{provider} refused the API key ({reason}): check {key_from}",
            code=f"{engine}_unauthorized",
        )
    if status == 429:
        return UpstreamRateLimitedError(
            f"{provider} is rate limiting us ({reason}){said}",
            code=f"{engine}_rate_limited",
            retry_after=retry_after(headers),
        )
    if status in PASSING_STATUSES or status >= 500:
        return UpstreamError(
            f"{provider} failed ({reason}){said}",
            code=f"{engine}_http_error",
            retryable=status in PASSING_STATUSES,
            retry_after=retry_after(headers),
        )
    param = fields.get(detail.field or "", None)
    if 400 <= status < 500:
        return InvalidRequestError(
            f"{provider} refused the request ({reason}){said}",
            param=param or "input",
            code=f"{engine}_refused",
        )
    return UpstreamError(f"{provider} answered {reason}", code=f"{engine}_http_error")


def http_url(engine: str, base_url: str) -> httpx.URL:
    """``[engines.NAME] base_url`` parsed; an EngineUnavailableError naming the setting (the URL
    shown without its password) when it is not an http(s) URL with a host."""
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise EngineUnavailableError(
            f"[engines.{engine}] base_url {redact_url(base_url)!r} is not an http(s) URL",
            code="engine_misconfigured",
        )
    return url


def unreachable(provider: str, error: Exception, *, engine: str, secrets: Iterable[str] = ()):
    """No answer from a provider (no connection, a timeout, a dropped stream) as ours: passing,
    so tried again. The library's own message is redacted: some carry the request's URL."""
    kind = "timed out" if isinstance(error, (httpx.TimeoutException, TimeoutError)) else "failed"
    message = redact(str(error) or type(error).__name__, secrets)
    return UpstreamError(
        f"{provider} {kind}: {message}", code=f"{engine}_unreachable", retryable=True
    )


@dataclass(frozen=True)
class ProviderDetail:
    """The parts of a provider's error body worth telling: its message and the field it names."""

    message: str = ""
    field: str | None = None


def provider_detail(body: bytes | str | Any) -> ProviderDetail:
    """Message and field of an error body in the shapes providers use: OpenAI's
    ``{"error": {"message", "param"}}``, FastAPI's ``{"detail": [{"loc", "msg"}]}`` (ElevenLabs'
    422) or ``{"detail": {"message"}}``, and ``{"message"}``; a text body as its first line."""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return ProviderDetail(body.strip().splitlines()[0] if body.strip() else "")
    if not isinstance(body, dict):
        return ProviderDetail()
    error = body.get("error")
    if isinstance(error, dict):
        return ProviderDetail(str(error.get("message") or ""), _text(error.get("param")))
    if isinstance(error, str):
        return ProviderDetail(error)
    detail = body.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        location = detail[0].get("loc") or []
        field = _text(location[-1]) if location else None
        return ProviderDetail(str(detail[0].get("msg") or ""), field)
    if isinstance(detail, dict):
        return ProviderDetail(str(detail.get("message") or ""), _text(detail.get("param")))
    if isinstance(detail, str):
        return ProviderDetail(detail)
    return ProviderDetail(str(body.get("message") or ""))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
