"""The LLM of a voice chat: chat messages in, the reply's text out as it is generated.

``OpenAICompatibleLLM`` speaks the OpenAI chat-completions streaming protocol, which OpenAI,
llama.cpp's server, vLLM, Ollama, LM Studio and most hosted providers serve. Every failure is an
``LLMError`` whose message says what to fix and whose ``retryable`` says whether trying again can
help (an unreachable or stalled server can; a wrong API key or a broken stream cannot). What the
server said is told by its status and error code only (``voxserve.net.upstream_reason``): an
error body can echo the key we sent. A password in the base URL is sent as basic auth and never
shown.

Consume a stream with ``contextlib.aclosing`` (or call its ``aclose()``) when stopping early, for
example on barge-in: closing it closes the HTTP response at once, so the server stops generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Protocol

import httpx

from voxserve.errors import VoxserveError
from voxserve.net import error_code, redact_url, upstream_reason, without_credentials


class LLMError(VoxserveError):
    """The LLM could not produce a reply. ``retryable``: trying again may succeed."""

    status_code = 502
    error_type = "llm_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        upstream_status: int | None = None,
        code: str | None = None,
    ):
        super().__init__(message, code=code)
        self.retryable = retryable
        self.upstream_status = upstream_status
        """The LLM server's HTTP status, when it answered with an error."""


class LLM(Protocol):
    def stream(self, messages: list[dict], *, max_tokens: int | None = None) -> AsyncIterator[str]:
        """The reply to ``messages``, in pieces of text as they are generated."""
        ...

    async def warm_up(self, messages: list[dict]) -> None:
        """Get ready, before the first reply, to answer a conversation opening with ``messages``."""
        ...


class OpenAICompatibleLLM:
    """A chat-completions server reached over HTTP, streamed with server-sent events.

    ``timeout`` bounds connecting and every wait between two pieces of the reply;
    ``first_token_timeout`` bounds the wait from sending the request to the first piece of text
    (a server still loading its model, or queueing us, fails fast instead of holding the turn).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        first_token_timeout: float = 15.0,
        temperature: float = 0.7,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise LLMError(
                f"the LLM base URL must start with http:// or https://, got "
                f"{redact_url(base_url)!r}",
                retryable=False,
                code="invalid_llm_url",
            )
        try:
            # Credentials in the URL go as basic auth: the URL in messages and httpx's log lines
            # then has none.
            base_url, auth = without_credentials(base_url)
        except httpx.InvalidURL as error:
            raise LLMError(
                f"the LLM base URL {redact_url(base_url)!r} is not valid: {error}",
                retryable=False,
                code="invalid_llm_url",
            ) from None
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.first_token_timeout = first_token_timeout
        self.temperature = temperature
        headers = {"Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(auth=auth, headers=headers, timeout=httpx.Timeout(timeout))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def warm_up(self, messages: list[dict]) -> None:
        """Nothing: the server keeps its own model warm, and a request would cost the user."""

    async def __aenter__(self) -> OpenAICompatibleLLM:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def stream(
        self, messages: list[dict], *, max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        body: dict = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "temperature": self.temperature,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        url = f"{self.base_url}/chat/completions"
        request = self._client.build_request("POST", url, json=body)
        # One deadline for everything up to the first piece of text: connecting, the response
        # headers and any role-only or keep-alive events before the text starts.
        first_token_deadline = asyncio.get_running_loop().time() + self.first_token_timeout
        try:
            async with asyncio.timeout_at(first_token_deadline):
                response = await self._client.send(request, stream=True)
        except TimeoutError:
            raise self._first_token_timeout() from None
        except httpx.HTTPError as error:
            raise self._transport_error(error) from error
        pieces = _content_pieces(response)
        try:
            if response.status_code >= 400:
                raise await self._http_error(response)
            first = True
            while True:
                try:
                    if first:
                        async with asyncio.timeout_at(first_token_deadline):
                            piece = await anext(pieces)
                    else:
                        async with asyncio.timeout(self.timeout):
                            piece = await anext(pieces)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if first:
                        raise self._first_token_timeout() from None
                    raise self._stalled() from None
                except httpx.TimeoutException:
                    raise (self._first_token_timeout() if first else self._stalled()) from None
                except httpx.HTTPError as error:
                    raise self._transport_error(error) from error
                first = False
                yield piece
        finally:
            await pieces.aclose()
            await response.aclose()

    def _first_token_timeout(self) -> LLMError:
        return LLMError(
            f"the LLM at {self.base_url} did not start answering within "
            f"{self.first_token_timeout:g} s (first_token_timeout); it may be overloaded or "
            "still loading its model",
            retryable=True,
            code="llm_timeout",
        )

    def _stalled(self) -> LLMError:
        return LLMError(
            f"the LLM at {self.base_url} stopped sending mid-reply for {self.timeout:g} s",
            retryable=True,
            code="llm_timeout",
        )

    def _transport_error(self, error: httpx.HTTPError) -> LLMError:
        detail = redact_url(str(error)) or type(error).__name__
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
            return LLMError(
                f"the LLM at {self.base_url} is not reachable: {detail}; check that it is "
                "running and that the URL is right",
                retryable=True,
                code="llm_unreachable",
            )
        if isinstance(error, httpx.TimeoutException):
            return self._stalled()
        if isinstance(error, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return LLMError(
                f"the LLM URL {self.base_url} is not valid: {detail}",
                retryable=False,
                code="invalid_llm_url",
            )
        return LLMError(
            f"the connection to the LLM at {self.base_url} broke: {detail}",
            retryable=True,
            code="llm_connection_error",
        )

    async def _http_error(self, response: httpx.Response) -> LLMError:
        status = response.status_code
        # The body only for its error code (upstream_reason): its text can echo our key.
        with contextlib.suppress(TimeoutError, httpx.HTTPError):
            async with asyncio.timeout(self.timeout):
                await response.aread()
        message = f"the LLM at {self.base_url} answered {upstream_reason(response)}"
        if status in (401, 403):
            message += "; check the API key"
        elif status == 404:
            message += "; check the base URL (often ending in /v1) and the model name"
        return LLMError(
            message,
            retryable=status in (408, 409, 429) or status >= 500,
            upstream_status=status,
            code="llm_http_error",
        )


async def _content_pieces(response: httpx.Response) -> AsyncIterator[str]:
    """The non-empty ``choices[0].delta.content`` of each event, until ``[DONE]``."""
    async for data in _sse_data(response):
        if data.strip() == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise _malformed(response, "an event is not JSON") from None
        if not isinstance(chunk, dict):
            raise _malformed(response, "an event is not a JSON object")
        if "error" in chunk:  # told by its code only, as an error answer is (upstream_reason)
            code = error_code(chunk)
            raise LLMError(
                f"the LLM at {_base(response)} failed mid-reply" + (f" ({code})" if code else ""),
                retryable=False,
                code="llm_stream_error",
            )
        choices = chunk.get("choices")
        if not choices:  # a usage chunk, or another event without text
            continue
        try:
            content = (choices[0].get("delta") or {}).get("content")
        except (AttributeError, IndexError, KeyError):
            raise _malformed(response, "unexpected chunk shape") from None
        if content:
            if not isinstance(content, str):
                raise _malformed(response, "delta content is not text")
            yield content


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The data of each server-sent event; comments and other fields are skipped."""
    data_lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data_lines:
                yield "\n".join(data_lines)
                data_lines = []
            continue
        if line.startswith(":"):  # keep-alive comment
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data_lines.append(value.removeprefix(" "))
    if data_lines:
        yield "\n".join(data_lines)


def _base(response: httpx.Response) -> str:
    return str(response.request.url).removesuffix("/chat/completions")


def _malformed(response: httpx.Response, detail: str) -> LLMError:
    return LLMError(
        f"the LLM at {_base(response)} sent a malformed stream ({detail}); is it an "
        "OpenAI-compatible chat-completions server?",
        retryable=False,
        code="llm_malformed_stream",
    )
