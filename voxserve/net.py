"""Fetching a URL that a client names (a clip to clone) without handing it our network.

Fetched naively, a URL from a request can read cloud metadata (169.254.169.254), services on
loopback or on the private network behind the server (server-side request forgery). So only
http(s) is fetched; the host is resolved once and every address it resolves to must be public;
the connection goes to that checked address (the Host header and the TLS name stay the URL's),
so a DNS answer that changes between the check and the connection (rebinding) gains nothing.
Redirects are followed by hand, each hop checked again. The body is read up to a size limit, and
the whole fetch (resolving, connecting, redirects, reading) has one deadline. A URL is parsed once,
by httpx, which also connects; one holding a backslash or a user name is refused, as parsers
disagree on where such a URL's host is (``http://127.0.0.1\\@8.8.8.8/``).

Also here, for every message that names a URL or an upstream server's answer: ``redact_url``
(credentials in URLs) and ``upstream_reason`` (what an error answer may tell our client).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
from typing import Any

import httpx

from voxserve.errors import InvalidRequestError, PayloadTooLargeError

MAX_REDIRECTS = 5

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# IPv6 prefixes that carry an IPv4 address in their last 32 bits and reach it (NAT64: RFC 6052's
# well-known prefix and RFC 8215's local one).
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_URL_CREDENTIALS = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^/?#\s@]*(?:@[^/?#\s@]*)*@", re.I)
_BEARER = re.compile(r"(bearer\s+)\S+", re.I)
_TOKEN = re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[a-z])[\w-]{16,}", re.I)
"""A word of 16 or more letters, digits, dashes or underscores, with a digit and a letter in it:
what keys and tokens look like (sk-..., rp_..., hex digests)."""
_ERROR_CODE = re.compile(r"[a-z_]{2,48}", re.I)
"""A code in an upstream error body we pass on: letters and underscores only (model_not_found,
invalid_api_key); a key or token has digits or dashes in it."""


def redact_url(text: str) -> str:
    """``text`` with the user name and password of every URL in it replaced by ***
    (``http://user:PASS@host`` -> ``http://***@host``): for messages and logs that name a URL
    from the configuration."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def scrub(text: str, limit: int = 300) -> str:
    """An upstream server's message made fit to pass on: cut to ``limit`` characters, with URL
    credentials, bearer tokens and anything that looks like a key replaced by ***."""
    text = _BEARER.sub(r"\1***", redact_url(text[:limit]))
    return _TOKEN.sub("***", text)


def without_credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """``url`` without its user name and password, and those as basic auth: what httpx sends for
    them anyway, but a URL with none never reaches its log lines or error messages."""
    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return url, None
    auth = httpx.BasicAuth(parsed.username, parsed.password)
    return str(parsed.copy_with(userinfo=b"")), auth


def upstream_reason(response: httpx.Response) -> str:
    """What an upstream server's error answer may tell our client: its status, the standard
    reason phrase and a plain-word error code from a JSON body. Never the body's text, nor the
    server's own reason phrase: one LLM server's error echoed our bearer key."""
    status = response.status_code
    reason = f"HTTP {status} {httpx.codes.get_reason_phrase(status)}".rstrip()
    try:
        code = error_code(json.loads(response.content))
    except (ValueError, httpx.ResponseNotRead):  # not JSON, or the body could not be read
        code = None
    return f"{reason} ({code})" if code else reason


def error_code(payload: Any) -> str | None:
    """The ``code`` (else ``type``) of an error, in ``{"error": {"code": ...}}`` (OpenAI's shape)
    or ``{"code": ...}``, when it is a plain word."""
    error = payload.get("error", payload) if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and _ERROR_CODE.fullmatch(value):
            return value
    return None


async def fetch_url(
    url: str,
    *,
    max_bytes: int,
    time_limit: float,
    allow_private: bool = False,
    param: str = "url",
) -> bytes:
    """The body of ``url``, fetched within ``time_limit`` seconds in all; raises
    InvalidRequestError (or PayloadTooLargeError) naming ``param``.

    ``allow_private`` lets the URL reach private, loopback and link-local addresses: only for
    deployments whose clients are trusted.
    """
    try:
        # trust_env=False: a proxy from the environment would connect on our behalf, to the name
        # rather than the checked address.
        async with (
            asyncio.timeout(time_limit),
            httpx.AsyncClient(trust_env=False, timeout=time_limit) as client,
        ):
            target = parse_url(url, param)
            for _ in range(MAX_REDIRECTS + 1):
                request = await _pinned_request(client, target, allow_private, param)
                response = await client.send(request, stream=True)
                try:
                    if not response.is_redirect:
                        return await _read_body(response, target, max_bytes, param)
                    target = parse_url(response.headers["location"], param, base=target)
                finally:
                    await response.aclose()
    except (TimeoutError, httpx.TimeoutException) as error:
        raise InvalidRequestError(
            f"{param}: the download did not finish within {time_limit:g} s",
            param=param,
            code="fetch_timeout",
        ) from error
    except httpx.InvalidURL as error:
        raise InvalidRequestError(
            f"{param}: not a valid URL ({error})", param=param, code="invalid_url"
        ) from error
    except httpx.HTTPError as error:
        raise InvalidRequestError(
            redact_url(f"{param}: could not fetch {url[:200]}: {error}"),
            param=param,
            code="fetch_failed",
        ) from error
    raise InvalidRequestError(
        f"{param}: more than {MAX_REDIRECTS} redirects", param=param, code="fetch_failed"
    )


async def _pinned_request(
    client: httpx.AsyncClient, target: httpx.URL, allow_private: bool, param: str
) -> httpx.Request:
    """A GET of ``target`` addressed to the IP its host resolved to, once that IP is checked."""
    host = target.raw_host.decode("ascii")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise InvalidRequestError(
            f"{param}: cannot resolve {host[:100]!r} ({error.strerror})",
            param=param,
            code="fetch_failed",
        ) from error
    except ValueError as error:  # UnicodeError: a label over 63 characters, or an empty one
        raise InvalidRequestError(
            f"{param}: {host[:100]!r} is not a valid host name", param=param, code="invalid_url"
        ) from error
    # IPv4 first: containers (RunPod's among them) often have no IPv6 route, and the connection
    # goes to one checked address, without the fallback to the next that a resolver-led one has.
    addresses = sorted(
        (ipaddress.ip_address(info[4][0]) for info in found), key=lambda address: address.version
    )
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise InvalidRequestError(
                    f"{param}: {host} is at {address}, a private, loopback, link-local or "
                    "reserved address; only public addresses can be fetched",
                    param=param,
                    code="url_not_allowed",
                )
    # The name stays in the Host header and in TLS (SNI and certificate check).
    extensions = {"sni_hostname": host} if target.scheme == "https" else {}
    return client.build_request(
        "GET",
        target.copy_with(host=str(addresses[0])),
        headers={"Host": target.netloc.decode("ascii"), "Accept-Encoding": "identity"},
        extensions=extensions,
    )


def parse_url(url: str, param: str, base: httpx.URL | None = None) -> httpx.URL:
    """``url`` (resolved against ``base``, for a redirect), parsed by the parser that connects,
    once it is an http(s) URL with a host and nothing that parsers read differently."""
    if "\\" in url:
        raise InvalidRequestError(
            f"{param} must not hold a backslash (parsers disagree on where its host ends)",
            param=param,
            code="invalid_url",
        )
    target = base.join(url) if base is not None else httpx.URL(url)
    if target.scheme not in ("http", "https"):
        raise InvalidRequestError(
            f"{param} must be an http or https URL, not {redact_url(url[:100])!r}",
            param=param,
            code="invalid_url",
        )
    if not target.host:
        raise InvalidRequestError(f"{param} has no host", param=param, code="invalid_url")
    if target.userinfo:
        raise InvalidRequestError(
            f"{param} must not hold a user name or password", param=param, code="invalid_url"
        )
    return target


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet (not private, loopback, link-local,
    shared, reserved or multicast), and so is any IPv4 address it carries (IPv4-mapped, 6to4,
    Teredo, NAT64): ``2002:7f00:1::`` reaches 127.0.0.1."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    if not address.is_global or address.is_multicast or address.is_reserved:
        return False
    return all(is_public(inner) for inner in _embedded_ipv4(address))


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.sixtofour, *(address.teredo or ())]
    if any(address in network for network in _NAT64):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [inner for inner in found if inner is not None]


async def _read_body(
    response: httpx.Response, target: httpx.URL, max_bytes: int, param: str
) -> bytes:
    if response.status_code != 200:
        raise InvalidRequestError(
            f"{param}: {target.host} answered HTTP {response.status_code}",
            param=param,
            code="fetch_failed",
        )
    too_large = PayloadTooLargeError(
        f"{param}: the file is over the {max_bytes / 2**20:g} MB limit",
        param=param,
        code="download_too_large",
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for data in response.aiter_bytes():
        body += data
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``localhost``, 127.0.0.1, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
