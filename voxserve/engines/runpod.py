"""RunPod: speech from voxserve's worker on a RunPod serverless endpoint (a GPU in the cloud).

Every call is one RunPod job per piece of text (a sentence, or a part of an overlong one): a
POST to the endpoint's ``/runsync``; when RunPod answers before the job is done (``IN_QUEUE`` or
``IN_PROGRESS``: a cold start, a busy endpoint), ``/status/{id}`` is polled until it is. The
endpoint must run ``voxserve.runpod_worker`` (Dockerfile.runpod); its WAVs are decoded and joined
with short fades.

    [engines.runpod]
    api_key = "..."            # or the RUNPOD_API_KEY environment variable
    endpoint_id = "abc123"
    base_url = "https://api.runpod.ai/v2"   # the default; a URL that already is one endpoint
                               # (the SDK's local API server, a proxy) needs no endpoint_id
    timeout = 300              # seconds one piece may take, queueing and cold start included
    engine = "higgs"           # the worker's engine; unset: the worker's default
    voices = ["default"]       # worker voices offered here; "default": the worker's default voice
    temperature = 0.3          # top_p, top_k, max_new_tokens, seed: sent when set, else the
                               # worker's defaults
    sample_rate = 24000        # languages = ["en"], max_input_chars = 500, concurrency = 2

Cloning is not offered: the worker clones from an ``audio_url`` it downloads, while a clip here
is a file on this machine, and publishing it somewhere the worker can reach is not this engine's
business. The worker takes no speed either, so only speed 1.0 is accepted.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from voxserve.audio import apply_fades, decode_audio
from voxserve.audio.frames import AudioChunk
from voxserve.config import as_list
from voxserve.engines.base import Capabilities, Engine, SynthesisOptions, Voice
from voxserve.errors import EngineError, EngineUnavailableError, InvalidRequestError, VoxserveError
from voxserve.net import redact_url, scrub, upstream_reason, without_credentials
from voxserve.text import plan_fragments

DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
DEFAULT_VOICE = "default"
"""The worker's own default voice: no ``voice`` is sent."""
SAMPLING_SETTINGS = ("temperature", "top_p", "top_k", "max_new_tokens", "seed")
PENDING = ("IN_QUEUE", "IN_PROGRESS")
JOIN_FADE_MS = 5.0  # as at the synthesizer's segment joins: no click, nothing audible
MAX_POLL_SECONDS = 2.0


class RunpodEngine(Engine):
    name = "runpod"
    requires = ("httpx",)

    def __init__(self, settings: Mapping[str, Any] | None = None, *, data_dir: Path | None = None):
        super().__init__(settings)
        self.timeout = float(self.settings.get("timeout", 300))
        self._client: httpx.Client | None = None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            sample_rate=int(self.settings.get("sample_rate", 24000)),
            languages=tuple(as_list(self.settings.get("languages", ("en",)))),
            max_input_chars=int(self.settings.get("max_input_chars", 500)),
            speed_range=(1.0, 1.0),
            # Jobs at once; an endpoint scales out to its max workers, each taking one job.
            concurrency=int(self.settings.get("concurrency", 2)),
        )

    def voices(self) -> list[Voice]:
        # Unconfigured, the engine offers nothing, staying out of every voice list.
        configured = "endpoint_id" in self.settings or "base_url" in self.settings
        language = self.capabilities.languages[0]
        return [
            Voice(voice_id, self.name, voice_id, language, "a voice of the RunPod worker")
            for voice_id in as_list(
                self.settings.get("voices", [DEFAULT_VOICE] if configured else [])
            )
        ]

    def load(self) -> None:
        api_key = self.settings.get("api_key") or os.environ.get("RUNPOD_API_KEY")
        if not api_key:
            raise InvalidRequestError(
                "the runpod engine needs an API key: set [engines.runpod] api_key or the "
                "RUNPOD_API_KEY environment variable",
                param="model",
                code="engine_not_configured",
            )
        base_url = str(self.settings.get("base_url", DEFAULT_BASE_URL)).rstrip("/")
        endpoint_id = self.settings.get("endpoint_id")
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
        self._client = httpx.Client(
            base_url=f"{base_url}/{endpoint_id}" if endpoint_id else base_url,
            auth=auth,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
        )

    def unload(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        max_chars = self.capabilities.max_input_chars
        pieces = [fragment.text for fragment in plan_fragments(text, max_chars, small_first=False)]
        for index, piece in enumerate(pieces):
            audio = self._run_job(self._job_input(piece, options))
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
        if self.settings.get("engine"):
            job["engine"] = self.settings["engine"]
        for key in SAMPLING_SETTINGS:
            if self.settings.get(key) is not None:
                job[key] = self.settings[key]
        return job

    def _run_job(self, job_input: dict[str, Any]) -> AudioChunk:
        """One job, from submission to decoded audio."""
        deadline = time.monotonic() + self.timeout
        result = self._post("/runsync", {"input": job_input})
        poll = 0.25
        while result.get("status") in PENDING:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with contextlib.suppress(VoxserveError):  # best effort: stop paying for it
                    self._post(f"/cancel/{result['id']}")
                raise EngineError(
                    f"RunPod job {result['id']} was still {result['status']} after "
                    f"{self.timeout:g} s (engines.runpod.timeout)",
                    code="runpod_timeout",
                )
            time.sleep(min(poll, remaining))
            poll = min(poll * 2, MAX_POLL_SECONDS)
            # POST: RunPod takes GET or POST here, the SDK's local API server only POST.
            result = self._post(f"/status/{result['id']}")
        if result.get("status") != "COMPLETED":
            raise EngineError(
                scrub(
                    f"RunPod job {result.get('id')} {result.get('status')}: "
                    f"{result.get('error') or 'no error message'}"
                ),
                code="runpod_job_failed",
            )
        try:
            wav = base64.b64decode(result["output"]["audio_base64"], validate=True)
            return decode_audio(wav)
        except (KeyError, TypeError, ValueError) as error:  # binascii.Error is a ValueError
            raise EngineError(
                f"RunPod job {result.get('id')} gave no audio_base64 WAV ({error}): does the "
                "endpoint run voxserve.runpod_worker?",
                code="runpod_bad_output",
            ) from error

    def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self._client is not None, "load() first"
        try:
            response = self._client.post(path, json=body)
        except httpx.TimeoutException as error:
            raise EngineError(
                f"RunPod did not answer {path} within {self.timeout:g} s (engines.runpod.timeout)",
                code="runpod_timeout",
            ) from error
        except httpx.HTTPError as error:
            raise EngineError(
                f"cannot reach RunPod at {self._client.base_url}: {error}",
                code="runpod_unreachable",
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
            )
        try:
            return response.json()
        except ValueError as error:
            raise EngineError(
                f"RunPod answered {path} with something other than JSON", code="runpod_bad_output"
            ) from error
