"""Home Assistant's Wyoming protocol: voxserve's voices and its bundled Whisper over one TCP port.

- ``info.py``: the ``info`` answer to ``describe`` (one TTS program, one ASR program), built from
  what engines declare, without loading any.
- ``voices.py``: a Wyoming voice name (``engine/voice``) to a speech request's fields, and back.
- ``handler.py``: one connection: ``describe``, one-shot ``synthesize``, the streaming
  ``synthesize-start``/``-chunk``/``-stop``, and ``transcribe`` with its audio.
- ``hearing.py``: a ``transcribe``'s audio gathered, converted to Whisper's 16 kHz, and heard.
- ``server.py``: the TCP server, sharing the process's Synthesizer with the HTTP app, its
  connections served as their address (Wyoming carries no key), and the zeroconf announcement.

The ``wyoming`` extra installs the protocol's package and ``zeroconf``; they are imported only
here, and only when a Wyoming port is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voxserve.config import ConfigError, Settings

if TYPE_CHECKING:
    from voxserve.server.wyoming.server import WyomingServer

MISSING_EXTRA = "the Wyoming server needs the wyoming extra: pip install 'voxserve[wyoming]'"


def wyoming_server(*args: Any, **kwargs: Any) -> WyomingServer:
    """A `WyomingServer` (its arguments); ConfigError naming the extra when it is missing."""
    try:
        from voxserve.server.wyoming.server import WyomingServer
    except ModuleNotFoundError as error:
        if error.name != "wyoming":
            raise
        raise ConfigError(MISSING_EXTRA) from error
    return WyomingServer(*args, **kwargs)


async def serve_alone(settings: Settings) -> None:
    """``voxserve wyoming``: a synthesizer of its own, served until cancelled."""
    from voxserve.server.spending import Spending
    from voxserve.synthesis.synthesizer import Synthesizer

    synthesizer = Synthesizer(settings)
    spending = Spending(settings.data_path)
    try:
        server = wyoming_server(synthesizer, spending)
        if settings.preload:
            await synthesizer.registry.ensure_loaded(settings.default_engine)
        await server.serve_forever()
    finally:
        synthesizer.registry.unload_all()
        spending.close()
