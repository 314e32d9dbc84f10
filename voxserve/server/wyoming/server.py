"""The Wyoming TCP server: started beside the HTTP app by ``voxserve serve`` (``[wyoming] port``),
or alone by ``voxserve wyoming``; announced by zeroconf when ``[wyoming] zeroconf`` is on.

Wyoming has no place for a key, so a connection is served as its address is over HTTP without
keys: the per-address limits of ``[auth]`` (shared with the HTTP app's), no budget. That is why
it listens on loopback unless ``wyoming.allow_unauthenticated`` is set (``config.py`` refuses a
non-loopback host without it), whether or not HTTP has keys: put it on a network only Home
Assistant can reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket

from wyoming.server import AsyncTcpServer

from voxserve.config import ConfigError
from voxserve.server.auth import RateLimiter
from voxserve.server.metrics import ServerMetrics
from voxserve.server.spending import Spending
from voxserve.server.wyoming import MISSING_EXTRA
from voxserve.server.wyoming.handler import Service, WyomingHandler
from voxserve.server.wyoming.info import server_info
from voxserve.synthesis.synthesizer import Synthesizer

logger = logging.getLogger("voxserve.server.wyoming")
SERVICE_TYPE = "_wyoming._tcp.local."
MDNS_GROUP = "224.0.0.251"


class WyomingServer:
    """Wyoming on ``[wyoming]``'s host and port, for ``synthesizer``; ``limiter``: the HTTP app's
    (an address's limits then count both), else one of its own."""

    def __init__(
        self,
        synthesizer: Synthesizer,
        spending: Spending,
        limiter: RateLimiter | None = None,
        metrics: ServerMetrics | None = None,
    ):
        self.synthesizer = synthesizer
        self.spending = spending
        self.limiter = limiter or RateLimiter()
        self.metrics = metrics
        self.settings = synthesizer.settings.wyoming
        self._server: AsyncTcpServer | None = None
        self._zeroconf = None  # its AsyncZeroconf, once announced

    async def start(self) -> None:
        """Listen (``info`` built first: ``describe`` is answered from memory)."""
        info = await asyncio.to_thread(server_info, self.synthesizer)
        service = Service(self.synthesizer, self.spending, self.limiter, info.event(), self.metrics)
        self._server = AsyncTcpServer(self.settings.host, self.settings.port)
        await self._server.start(lambda reader, writer: WyomingHandler(reader, writer, service))
        logger.info("Wyoming on tcp://%s:%s", self.settings.host, self.settings.port)
        if self.settings.zeroconf:
            self._zeroconf = await announce(
                self.settings.zeroconf_name, self.settings.host, self.settings.port
            )

    async def stop(self) -> None:
        """Stop listening; connections end, and their synthesis with them."""
        if self._zeroconf is not None:
            await self._zeroconf.async_unregister_all_services()
            await self._zeroconf.async_close()
            self._zeroconf = None
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def serve_forever(self) -> None:
        """``voxserve wyoming``: until cancelled (Ctrl-C)."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()


async def announce(name: str, host: str, port: int):
    """Register ``name`` as a Wyoming service at ``host``'s address, on that address's network
    (every network, for a wildcard host); the caller unregisters it."""
    try:
        from zeroconf import InterfaceChoice
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
    except ModuleNotFoundError as error:
        raise ConfigError(MISSING_EXTRA.replace("server", "announcement")) from error

    address = await asyncio.to_thread(announced_address, host)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    info = AsyncServiceInfo(
        SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", port=port,
        addresses=[socket.inet_pton(family, address)],
    )  # fmt: skip
    zeroconf = AsyncZeroconf(interfaces=InterfaceChoice.All if _wildcard(host) else [address])
    await zeroconf.async_register_service(info)
    logger.info("Wyoming announced by zeroconf as %r at %s:%s", name, address, port)
    return zeroconf


def announced_address(host: str) -> str:
    """``host``'s address; for a wildcard (``0.0.0.0``), the address this machine reaches the
    local network from. Blocking (a host name is looked up)."""
    if not _wildcard(host):
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(host.strip("[]")))
        return socket.gethostbyname(host)
    # A datagram socket "connected" to the mDNS group sends nothing, but says which address
    # this machine would send from.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((MDNS_GROUP, 1))
        return probe.getsockname()[0]


def _wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")
