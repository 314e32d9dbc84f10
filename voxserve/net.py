"""Fetching a URL that a client names (a clip to clone) without handing it our network.

Fetched naively, a URL from a request can read cloud metadata (169.254.169.254), services on
loopback or on the private network behind the server (server-side request forgery). So only
http(s) is fetched; the host is resolved once and every address it resolves to must be public;
the connection goes to that checked address (the Host header and the TLS name stay the URL's),
so a DNS answer that changes between the check and the connection (rebinding) gains nothing.
Redirects are followed by hand, each hop checked again. The body is read up to a size limit, and
the whole fetch (resolving, connecting, redirects, reading) has one deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from voxserve.errors import InvalidRequestError, PayloadTooLargeError

MAX_REDIRECTS = 5

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
            for _ in range(MAX_REDIRECTS + 1):
                target = httpx.URL(url)
                request = await _pinned_request(client, target, allow_private, param)
                response = await client.send(request, stream=True)
                try:
                    if not response.is_redirect:
                        return await _read_body(response, target, max_bytes, param)
                    url = str(target.join(response.headers["location"]))
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
            f"{param}: could not fetch {url}: {error}", param=param, code="fetch_failed"
        ) from error
    raise InvalidRequestError(
        f"{param}: more than {MAX_REDIRECTS} redirects", param=param, code="fetch_failed"
    )


async def _pinned_request(
    client: httpx.AsyncClient, target: httpx.URL, allow_private: bool, param: str
) -> httpx.Request:
    """A GET of ``target`` addressed to the IP its host resolved to, once that IP is checked."""
    if target.scheme not in ("http", "https"):
        raise InvalidRequestError(
            f"{param} must be an http or https URL, not {str(target)[:100]!r}",
            param=param,
            code="invalid_url",
        )
    if not target.host:
        raise InvalidRequestError(f"{param} has no host", param=param, code="invalid_url")
    host = target.raw_host.decode("ascii")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise InvalidRequestError(
            f"{param}: cannot resolve {host!r} ({error.strerror})", param=param, code="fetch_failed"
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


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet (not private, loopback, link-local,
    shared, reserved or multicast)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return address.is_global and not (address.is_multicast or address.is_reserved)


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
