"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from voxserve import __version__
from voxserve.chat.warmup import ChatWarmup
from voxserve.config import Settings, load_settings
from voxserve.longform.jobs import JobRunner, JobStore
from voxserve.server.auth import AccessControl, AccessPolicy, redact_keys_in_logs
from voxserve.server.auth import router as auth_router
from voxserve.server.captioned_speech import router as captioned_speech_router
from voxserve.server.connections import ConnectionGuard
from voxserve.server.cross_site import CrossSiteGuard, SitePolicy
from voxserve.server.dialogue import router as dialogue_router
from voxserve.server.errors import install_error_handlers
from voxserve.server.estimate import router as estimate_router
from voxserve.server.jobs import router as jobs_router
from voxserve.server.metrics import RequestCounter, ServerMetrics
from voxserve.server.openai import router as openai_router
from voxserve.server.spending import HoldSpending, Spending
from voxserve.server.voices import ROUTE_WORDS
from voxserve.server.voices import router as voices_router
from voxserve.server.ws_chat import chat_llm, conversation_store
from voxserve.server.ws_chat import router as chat_router
from voxserve.server.ws_speech import router as speech_stream_router
from voxserve.server.ws_tts import router as tts_provider_router
from voxserve.server.wyoming import wyoming_server
from voxserve.synthesis.synthesizer import Synthesizer
from voxserve.voices.library import VoiceLibrary

logger = logging.getLogger("voxserve.server")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


async def _unload_idle_engines(synthesizer: Synthesizer, every: float = 5.0) -> None:
    while True:
        await asyncio.sleep(every)
        for name in await synthesizer.registry.unload_idle():
            logger.info("engine %r unloaded after its keep-alive", name)


def create_app(settings: Settings | None = None, synthesizer: Synthesizer | None = None) -> FastAPI:
    """The application; pass a synthesizer to serve engines of your own (plugins, test doubles)."""
    settings = synthesizer.settings if synthesizer else settings or load_settings()
    metrics = ServerMetrics()
    access_policy = AccessPolicy.from_settings(settings)  # refuses an exposed server with no keys

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal synthesizer
        redact_keys_in_logs()  # after uvicorn has set up its loggers
        synthesizer = synthesizer or Synthesizer(settings)
        metrics.watch(synthesizer)
        app.state.synthesizer = synthesizer
        app.state.spending = Spending(settings.data_path)
        metrics.charge = app.state.spending.charge
        app.state.dialogue_timings = OrderedDict()
        app.state.chat_llm = chat_llm(settings.chat)
        app.state.chat_history = conversation_store(settings)
        app.state.chat_warmup = ChatWarmup(synthesizer, app.state.chat_llm, settings.chat)
        if settings.chat.preload:
            app.state.chat_warmup.start()
        reserved = {voice.id for voice in synthesizer.registry.all_voices()}
        app.state.library = VoiceLibrary(
            synthesizer.resolver.voices,
            settings,
            reserved | set(settings.voice_aliases) | ROUTE_WORDS,
            synthesizer.resolver.transcriber,  # one Whisper model for profiles and cloning requests
            synthesizer.registry,
        )
        if settings.preload:
            await synthesizer.registry.ensure_loaded(settings.default_engine)
            logger.info("engine %r loaded", settings.default_engine)
        reaper = asyncio.create_task(_unload_idle_engines(synthesizer))
        app.state.jobs = JobRunner(synthesizer, JobStore(settings.data_path))
        app.state.jobs.start()  # jobs a stopped server left unfinished go on
        wyoming = None
        if settings.wyoming.port is not None:  # the same synthesizer, spending and rate limits
            limiter = access_policy.limiter
            wyoming = wyoming_server(synthesizer, app.state.spending, limiter, metrics)
            await wyoming.start()
        yield
        if wyoming is not None:
            await wyoming.stop()
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await app.state.jobs.close()  # a running job stays "running": the next start resumes it
        app.state.jobs.store.close()
        await app.state.chat_warmup.close()
        synthesizer.registry.unload_all()
        if app.state.chat_llm is not None:  # the embedded one's child process ends with us
            await app.state.chat_llm.aclose()
        if app.state.chat_history is not None:
            app.state.chat_history.close()
        app.state.spending.close()

    app = FastAPI(title="voxserve", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.access_policy = access_policy
    # Each added middleware wraps the ones before: cross-site checks and CORS preflights come
    # before any key is asked for, and refusals are counted like every other answer.
    app.add_middleware(HoldSpending)
    app.add_middleware(AccessControl, policy=access_policy)
    app.add_middleware(CrossSiteGuard, policy=SitePolicy(settings, access_policy.enabled))
    app.add_middleware(ConnectionGuard, settings=settings.connections)
    app.add_middleware(RequestCounter, metrics=metrics)
    install_error_handlers(app)
    app.include_router(auth_router)
    app.include_router(estimate_router)
    app.include_router(openai_router)
    app.include_router(captioned_speech_router)
    app.include_router(voices_router)
    app.include_router(dialogue_router)
    app.include_router(jobs_router)
    app.include_router(chat_router)
    app.include_router(speech_stream_router)
    app.include_router(tts_provider_router)

    @app.get("/chat", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(WEB_DIR / "chat.html")

    # Last: the playground at / and the pages' scripts and worklets, after every API route.
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app
