"""RunPod: speech from voxserve's worker on a RunPod serverless endpoint (a GPU in the cloud).

Every call is one RunPod job per piece of text (a sentence, or a part of an overlong one): a
POST to the endpoint's ``/runsync``; when RunPod answers before the job is done (``IN_QUEUE`` or
``IN_PROGRESS``: a cold start, a busy endpoint), ``/status/{id}`` is polled until it is. The
endpoint must run ``voxserve.runpod_worker`` (Dockerfile.runpod); its WAVs are decoded and joined
with short fades.

    [engines.runpod]
    api_key = "..."            # or VOXSERVE_ENGINES__RUNPOD__API_KEY, or RUNPOD_API_KEY
    endpoint_id = "abc123"
    base_url = "https://api.runpod.ai/v2"   # the default; a URL that already is one endpoint
                               # (the SDK's local API server, a proxy) needs no endpoint_id
    timeout = 300              # seconds one piece may take, queueing and cold start included
    engine = "higgs"           # the worker's engine; unset: the worker's default
    voices = ["default"]       # worker voices offered here; "default": the worker's default voice
    temperature = 0.3          # top_p, top_k, max_new_tokens, seed: sent when set, else the
                               # worker's defaults
    sample_rate = 24000        # languages = ["en"], max_input_chars = 500, concurrency = 2

It is natively async: a closed or cancelled stream stops at once, and a job RunPod has named
(its id comes with ``/runsync``'s answer, which waits at most ``RUNSYNC_WAIT_MS`` for the job) is
cancelled on RunPod in the background, so that no GPU keeps working for nobody. Passing failures
(no connection, a 5xx or 429 from RunPod) are ``retryable``: the segment is tried again while none
of its audio has gone out.

Cloning is not offered: the worker clones from an ``audio_url`` it downloads, while a clip here
is a file on this machine, and publishing it somewhere the worker can reach is not this engine's
business. The worker takes no speed either, so only speed 1.0 is accepted.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, SecretStr

from voxserve.audio import apply_fades, decode_audio
from voxserve.audio.frames import AudioChunk
from voxserve.engines.base import (
    Capabilities,
    Engine,
    EngineSettings,
    Segment,
    SettingsGiven,
    SynthesisOptions,
    Voice,
)
from voxserve.engines.remote import PerLoop
from voxserve.errors import EngineError, EngineUnavailableError, InvalidRequestError
from voxserve.net import redact_url, scrub, upstream_reason, without_credentials
from voxserve.text import plan_fragments

logger = logging.getLogger("voxserve.engines.runpod")

DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
DEFAULT_VOICE = "default"
"""The worker's own default voice: no ``voice`` is sent."""
DEFAULT_CONCURRENCY = 2
"""Jobs at once; an endpoint scales out to its max workers, each taking one job."""
SAMPLING_SETTINGS = ("temperature", "top_p", "top_k", "max_new_tokens", "seed")
PENDING = ("IN_QUEUE", "IN_PROGRESS")
JOIN_FADE_MS = 5.0  # as at the synthesizer's segment joins: no click, nothing audible
MAX_POLL_SECONDS = 2.0
RUNSYNC_WAIT_MS = 10_000
"""How long ``/runsync`` holds a job before answering with its id (RunPod: 1000 to 300000, 90000
by default). Longer than a sentence takes on a warm worker; short enough that a job waiting for
a cold start gets its id soon, and with it can be cancelled."""
CANCEL_TIMEOUT = 5.0
"""Seconds a best-effort ``/cancel`` may take."""
PASSING_STATUSES = frozenset({429, 500, 502, 503, 504})


class RunpodSettings(EngineSettings):
    """``[engines.runpod]``."""

    api_key: SecretStr | None = None
    """RunPod's API key; None: the ``RUNPOD_API_KEY`` environment variable (RunPod's own
    name for it, which its SDK and CLI read too)."""
    endpoint_id: str | None = None
    base_url: str | None = Field(None, repr=False)  # it may hold a password
    """None: RunPod's API (``https://api.runpod.ai/v2``), with ``endpoint_id``; a URL that
    already is one endpoint (the SDK's local API server, a proxy) needs none."""
    timeout: float = Field(300.0, gt=0)
    """Seconds one piece of text may take, queueing and cold start included."""
    engine: str | None = None
    """The worker's engine; None: the worker's default."""
    voices: list[str] | None = None
    """Worker voices offered here; None: ``default`` (the worker's own) once an endpoint is set."""
    temperature: float | None = Field(None, gt=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    sample_rate: int = Field(24000, ge=8000, le=48000)
    """The rate the worker's voices speak at."""
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    """What the worker's voices speak."""
    max_input_chars: int = Field(500, ge=1)


class RunpodEngine(Engine):
    name = "runpod"
    requires = ("httpx",)
    Settings = RunpodSettings
    settings: RunpodSettings

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        self._connection: dict[str, Any] | None = None
        """httpx.AsyncClient arguments, made by ``load``."""
        self._clients = PerLoop(
            lambda: httpx.AsyncClient(**self._connection), lambda client: client.aclose()
        )
        self._cancelling: set[asyncio.Task] = set()

    def describe(self) -> Capabilities:
        return Capabilities(
            sample_rate=self.settings.sample_rate,
            languages=tuple(self.settings.languages),
            max_input_chars=self.settings.max_input_chars,
            speed_range=(1.0, 1.0),
            concurrency=self.settings.concurrency or DEFAULT_CONCURRENCY,
        )

    def voices(self) -> list[Voice]:
        # Unconfigured, the engine offers nothing, staying out of every voice list.
        configured = self.settings.endpoint_id is not None or self.settings.base_url is not None
        voices = self.settings.voices
        if voices is None:
            voices = [DEFAULT_VOICE] if configured else []
        languages = tuple(self.settings.languages)
        return [
            Voice(
                voice_id,
                self.name,
                voice_id,
                languages[0],
                "a voice of the RunPod worker",
                languages=languages,
            )
            for voice_id in voices
        ]

    def load(self) -> None:
        key = self.settings.api_key
        api_key = key.get_secret_value() if key else os.environ.get("RUNPOD_API_KEY")
        if not api_key:
            raise InvalidRequestError(
                "the runpod engine needs an API key: set [engines.runpod] api_key "
                "(VOXSERVE_ENGINES__RUNPOD__API_KEY) or the RUNPOD_API_KEY environment variable",
                param="model",
                code="engine_not_configured",
            )
        base_url = (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        endpoint_id = self.settings.endpoint_id
        if not endpoint_id and base_url == DEFAULT_BASE_URL:
            raise InvalidRequestError(
                "the runpod engine needs the endpoint to call: set [engines.runpod] endpoint_id",
                param="model",
                code="engine_not_configured",
            )
        try:
            # Credentials in base_url go as basic auth, so that no log line or message shows them.
            base_url, auth = without_credentials(base_url)
        except httpx.InvalidURL as error:
            raise EngineUnavailableError(
                f"[engines.runpod] base_url {redact_url(base_url)!r} is not a valid URL: {error}",
                code="engine_misconfigured",
            ) from None
        timeout = self.settings.timeout
        self._connection = {
            "base_url": f"{base_url}/{endpoint_id}" if endpoint_id else base_url,
            "auth": auth,
            "headers": {"Authorization": f"Bearer {api_key}"},
            "timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        }

    def unload(self) -> None:
        self._connection = None
        self._clients.drop()

    async def generate(self, segment: Segment) -> AsyncIterator[AudioChunk]:
        max_chars = self.capabilities.max_input_chars
        text = segment.text
        pieces = [fragment.text for fragment in plan_fragments(text, max_chars, small_first=False)]
        for index, piece in enumerate(pieces):
            audio = await self._run_job(self._job_input(piece, segment.voicing.options))
            yield AudioChunk(
                apply_fades(
                    audio.samples,
                    audio.sample_rate,
                    fade_in_ms=JOIN_FADE_MS if index > 0 else 0.0,
                    fade_out_ms=JOIN_FADE_MS if index < len(pieces) - 1 else 0.0,
                ),
                audio.sample_rate,
            )

    def _job_input(self, text: str, options: SynthesisOptions) -> dict[str, Any]:
        job: dict[str, Any] = {"prompt": text}
        if options.voice != DEFAULT_VOICE:
            job["voice"] = options.voice
        if self.settings.engine:
            job["engine"] = self.settings.engine
        for key in SAMPLING_SETTINGS:
            if (value := getattr(self.settings, key)) is not None:
                job[key] = value
        return job

    async def _run_job(self, job_input: dict[str, Any]) -> AudioChunk:
        """One job, from submission to decoded audio."""
        timeout = self.settings.timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        result = await self._post("/runsync", {"input": job_input}, wait=RUNSYNC_WAIT_MS)
        job_id = result.get("id")
        poll = 0.25
        try:
            while result.get("status") in PENDING:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise EngineError(
                        f"RunPod job {job_id} was still {result['status']} after {timeout:g} s "
                        "(engines.runpod.timeout)",
                        code="runpod_timeout",
                    )
                await asyncio.sleep(min(poll, remaining))
                poll = min(poll * 2, MAX_POLL_SECONDS)
                # POST: RunPod takes GET or POST here, the SDK's local API server only POST.
                result = await self._post(f"/status/{job_id}")
        except asyncio.CancelledError:
            self._cancel_in_background(job_id)  # the cancellation itself is not held up
            raise
        except Exception:
            await self._cancel(job_id)  # timed out, or a retry makes a new job: stop this one
            raise
        if result.get("status") != "COMPLETED":
            raise EngineError(
                scrub(
                    f"RunPod job {job_id} {result.get('status')}: "
                    f"{result.get('error') or 'no error message'}"
                ),
                code="runpod_job_failed",
            )
        try:
            wav = base64.b64decode(result["output"]["audio_base64"], validate=True)
        except (KeyError, TypeError, ValueError) as error:  # binascii.Error is a ValueError
            raise self._bad_output(job_id, error) from error
        try:
            return await asyncio.to_thread(decode_audio, wav)  # FFmpeg: off the event loop
        except ValueError as error:
            raise self._bad_output(job_id, error) from error

    @staticmethod
    def _bad_output(job_id: Any, error: Exception) -> EngineError:
        return EngineError(
            f"RunPod job {job_id} gave no audio_base64 WAV ({error}): does the endpoint run "
            "voxserve.runpod_worker?",
            code="runpod_bad_output",
        )

    async def _cancel(self, job_id: Any) -> None:
        """Best effort: RunPod stops the job, or it runs out; either way nobody waits for it."""
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                await self._post(f"/cancel/{job_id}")
        except Exception as error:  # whatever went wrong, nothing depends on it
            logger.debug("RunPod job %s not cancelled: %s", job_id, error)

    def _cancel_in_background(self, job_id: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._cancel(job_id))
        self._cancelling.add(task)  # a strong reference until it is done
        task.add_done_callback(self._cancelling.discard)

    async def _post(
        self, path: str, body: dict[str, Any] | None = None, *, wait: int | None = None
    ) -> dict[str, Any]:
        client = self._client_here()
        params = {"wait": wait} if wait is not None else None
        try:
            response = await client.post(path, json=body, params=params)
        except httpx.ConnectTimeout as error:
            raise EngineError(
                f"cannot reach RunPod at {client.base_url}: no connection within "
                f"{client.timeout.connect:g} s",
                code="runpod_unreachable",
                retryable=True,
            ) from error
        except httpx.TimeoutException as error:
            raise EngineError(
                f"RunPod did not answer {path} within {self.settings.timeout:g} s "
                "(engines.runpod.timeout)",
                code="runpod_timeout",
            ) from error
        except httpx.HTTPError as error:
            raise EngineError(
                f"cannot reach RunPod at {client.base_url}: {error}",
                code="runpod_unreachable",
                retryable=True,
            ) from error
        if response.status_code == 401:
            raise EngineUnavailableError(
                "RunPod refused the API key (HTTP 401): check [engines.runpod] api_key or "
                "RUNPOD_API_KEY",
                code="runpod_unauthorized",
            )
        if not response.is_success:
            raise EngineError(
                f"RunPod answered {upstream_reason(response)} to {path}",
                code="runpod_http_error",
                retryable=response.status_code in PASSING_STATUSES,
            )
        try:
            return response.json()
        except ValueError as error:
            raise EngineError(
                f"RunPod answered {path} with something other than JSON", code="runpod_bad_output"
            ) from error

    def _client_here(self) -> httpx.AsyncClient:
        if self._connection is None:
            raise EngineError("the runpod engine is not loaded", code="engine_not_loaded")
        return self._clients.get()
