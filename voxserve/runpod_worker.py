"""The RunPod serverless worker: a RunPod job in, a WAV out, through the one Synthesizer.

    python -m voxserve.runpod_worker            # on RunPod (Dockerfile.runpod's command)
    python -m voxserve.runpod_worker --test_input '{"input": {"prompt": "Hello!"}}'
    python -m voxserve.runpod_worker --rp_serve_api --rp_api_port 8000   # RunPod's API, locally

A job's input (any other field is refused):

    prompt          the text to speak (required)
    voice, engine   as ``voice`` and ``model`` of /v1/audio/speech; default: the configured ones
    audio_url       a clip to clone, fetched over http(s) (see voxserve.net); needs an engine
                    that can clone
    transcript      what the clip says; without it the clip is transcribed (the stt extra;
                    without that extra the job is refused, saying so)
    temperature, top_p, top_k, max_new_tokens, seed
                    sampling, for engines that sample (below); a field not given keeps the
                    engine's configured value
    timestamps      true: the output also has ``timestamps``, when each word is spoken
                    (``[{"word", "start", "end"}]``, seconds); refused for an engine that does
                    not time its words

Its output: ``{"audio_base64": a WAV in base64, "duration": seconds, "sample_rate": Hz}``. A job
that cannot be done answers RunPod's ``{"error": "message"}``, the message naming the field at
fault; never a traceback.

Sampling parameters go with the request (``SpeechRequest.sampling``) to engines that sample
(``Capabilities.sampling``: higgs); for the embedded engine, which does not, they are left out.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from voxserve.config import ConfigError, RunpodSettings, load_settings
from voxserve.errors import EngineError, InvalidRequestError, VoxserveError
from voxserve.net import fetch_url
from voxserve.request import Sampling, SpeechRequest
from voxserve.server.errors import validation_error
from voxserve.streaming import check_word_timings, client_error, encode_whole
from voxserve.synthesis.synthesizer import CloneReference, Synthesizer

logger = logging.getLogger("voxserve.runpod")


class WorkerInput(BaseModel):
    """A job's ``input``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    audio_url: str | None = None
    transcript: str | None = None
    voice: str | None = None
    engine: str | None = None
    # None: the engine's configured value (a default here would override the worker's settings).
    temperature: float | None = Field(None, gt=0.0, le=2.0)  # 0 is no sampling: Higgs refuses it
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    timestamps: bool = False

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("empty or only whitespace")
        return prompt

    @model_validator(mode="after")
    def _clip_fields_agree(self) -> WorkerInput:
        if self.transcript is not None and self.audio_url is None:
            raise ValueError("transcript is what audio_url says: give audio_url with it")
        if self.voice is not None and self.audio_url is not None:
            raise ValueError("the clip at audio_url is the voice: give one, not both")
        return self

    def sampling(self) -> Sampling | None:
        """The sampling fields the job gave; None when it gave none."""
        given = self.model_dump(include=set(Sampling.model_fields), exclude_none=True)
        return Sampling(**given) if given else None


class RunpodWorker:
    """Turns RunPod jobs into speech requests; one per process, its synthesizer kept warm."""

    def __init__(self, synthesizer: Synthesizer, settings: RunpodSettings | None = None):
        self.synthesizer = synthesizer
        self.settings = settings or synthesizer.settings.runpod

    async def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        """RunPod's handler: the job's output, or ``{"error": message}``."""
        try:
            return await self.speak(WorkerInput.model_validate(job.get("input")))
        except ValidationError as error:
            return {"error": validation_error(error).message}
        except Exception as error:
            told = client_error(error, logger, f"running job {job.get('id')}")
            if not isinstance(error, VoxserveError):
                # A bug (logged, with its traceback), not a sign of a broken GPU: no fresh
                # worker, or any job that meets it could have RunPod restart workers at will.
                return {"error": "internal error (see the worker's log)"}
            if not isinstance(error, EngineError):
                return {"error": told.message}
            logger.error("job %s: %s", job.get("id"), told.message, exc_info=error.__cause__)
            # A failed engine may have left the GPU in a bad state: RunPod replaces the worker
            # after this job rather than let it fail every job that follows.
            return {"error": told.message, "refresh_worker": True}

    async def speak(self, job: WorkerInput) -> dict[str, Any]:
        engine = self.synthesizer.registry.engine_for_model(job.engine)
        request = SpeechRequest(
            input=job.prompt,
            voice=job.voice,
            model=job.engine,
            response_format="wav",
            sampling=job.sampling() if engine.capabilities.sampling else None,
            timestamps=job.timestamps,
        )
        reference = None
        if job.audio_url is not None:
            reference = await self.reference(job.audio_url, job.transcript, job.engine)
        prepared = await asyncio.to_thread(self.synthesizer.prepare, request, reference)
        if job.timestamps:
            check_word_timings([prepared.voicing], self.synthesizer.aligner)
        chunks = self.synthesizer.stream(prepared)
        encoded = await encode_whole(chunks, "wav", prepared.sample_rate)
        output: dict[str, Any] = {
            "audio_base64": base64.b64encode(encoded.audio).decode("ascii"),
            "duration": round(encoded.seconds, 3),
            "sample_rate": prepared.sample_rate,
        }
        if job.timestamps:
            output["timestamps"] = [word.to_dict() for word in encoded.words]
        return output

    async def reference(
        self, url: str, transcript: str | None, engine: str | None
    ) -> CloneReference:
        """The clip at ``url``, checked and cleaned (and transcribed if no transcript came)."""
        self.synthesizer.resolver.cloning_engine(engine, "audio_url")  # refuse before downloading
        audio = await fetch_url(
            url,
            max_bytes=int(self.settings.max_audio_mb * 2**20),
            time_limit=self.settings.fetch_timeout,
            allow_private=self.settings.allow_private_urls,
            param="audio_url",
        )
        try:
            resolver = self.synthesizer.resolver
            return await asyncio.to_thread(resolver.clone_reference, audio, transcript)
        except InvalidRequestError as error:  # the clip's faults, said of the field it came in
            raise InvalidRequestError(
                f"audio_url: {error.message}", param="audio_url", code=error.code
            ) from error


def main() -> None:
    try:
        import runpod
    except ImportError:
        sys.exit("the RunPod worker needs the runpod extra: pip install 'voxserve[runpod]'")
    try:
        settings = load_settings()
    except ConfigError as error:
        sys.exit(str(error))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s:%(name)s: %(message)s"
    )
    synthesizer = Synthesizer(settings)
    if settings.preload:  # a warm start: the first job does not wait for the model
        asyncio.run(synthesizer.registry.ensure_loaded(settings.default_engine))
    runpod.serverless.start({"handler": RunpodWorker(synthesizer).handle})


if __name__ == "__main__":
    main()
