"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from voxserve import __version__
from voxserve.config import Settings, load_settings
from voxserve.server.errors import install_error_handlers
from voxserve.server.openai import router as openai_router
from voxserve.synthesis.synthesizer import Synthesizer

logger = logging.getLogger("voxserve.server")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        synthesizer = Synthesizer(settings)
        app.state.synthesizer = synthesizer
        if settings.preload:
            await synthesizer.registry.ensure_loaded(settings.default_engine)
            logger.info("engine %r loaded", settings.default_engine)
        yield
        synthesizer.registry.unload_all()

    app = FastAPI(title="voxserve", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(openai_router)
    return app
