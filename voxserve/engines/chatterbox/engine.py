"""Chatterbox (Resemble AI), on the ``chatterbox-tts`` package: zero-shot cloning, streamed.

T3, a Llama (520M) conditioned on a speaker embedding, a speech prompt of the voice and an
"exaggeration" (emotion) value, speaks text as S3 speech tokens (25 a second), with
classifier-free guidance (``cfg_weight``); S3Gen, flow matching then a HiFT-GAN vocoder, turns
tokens into 24 kHz audio in the reference clip's timbre. Every clip carries Resemble's
imperceptible Perth watermark unless ``watermark`` is off.

How a call runs (``synthesize``):

1. the voice (``loading.conditionals``): the checkpoint's built-in one, or a clone's clip,
   turned into conditionals once per file version; the call's exaggeration set on a copy;
2. tokens (``generation.speech_tokens``), one a step, with the call's seed;
3. decoding (``streaming.StreamingDecoder``): every ``chunk_tokens`` (the first after
   ``first_chunk_tokens``) the new audio, each join crossfaded, then the watermark
   (``watermark.StreamWatermarker``), and the chunk goes out while T3 goes on;
4. with ``candidates`` > 1, takes instead (``candidates``): whole clips with their own seeds,
   heard by Whisper, the closest sent; none close enough: the text again in shorter pieces, then
   the fallback engine.

Upstream's import needs torchaudio and ``pkg_resources``, absent or broken beside this project's
torch and setuptools: ``compat`` supplies what it uses. Settings and per-request options:
``settings``; loading: ``loading``; a random checkpoint for tests: ``random_model``.
"""

from __future__ import annotations

import functools
import math
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from voxserve.audio import StreamResampler
from voxserve.audio.frames import AudioChunk
from voxserve.engines.base import (
    BlockingEngine,
    Capabilities,
    SettingsGiven,
    SynthesisOptions,
    Voice,
)
from voxserve.engines.chatterbox.candidates import Judged, judge, shorter_pieces
from voxserve.engines.chatterbox.loading import SAMPLE_RATE
from voxserve.engines.chatterbox.settings import ChatterboxOptions, ChatterboxSettings
from voxserve.engines.higgs.engine import RUNAWAY_BASE_SECONDS, RUNAWAY_SECONDS_PER_CHAR
from voxserve.engines.reference_clips import PerFileCache, reference_clip
from voxserve.errors import EngineError, EngineUnavailableError, InvalidRequestError

DEFAULT_VOICE = "chatterbox"
TOKEN_RATE = 25
"""Speech tokens a second."""


@dataclass
class ChatterboxStats:
    """What the engine has done since it was made: progress a bench or a test can read."""

    tokens: int = 0
    """Speech tokens generated."""
    decodes: int = 0
    """S3Gen runs (streamed chunks and whole takes)."""
    takes: int = 0
    """Candidate takes generated and heard by Whisper."""
    retries: int = 0
    """Texts tried again in shorter pieces, no take of them close enough."""
    fallbacks: int = 0
    """Pieces spoken by the fallback engine."""


@dataclass(frozen=True)
class _Call:
    """One call's voice and sampling, resolved from settings, profile and request."""

    voice: Any
    """T3Cond with the call's exaggeration."""
    reference: dict
    """S3Gen's reference (the voice's ``gen``)."""
    sampling: Any
    """``generation.TokenSampling``."""
    seed: int


class ChatterboxEngine(BlockingEngine):
    name = "chatterbox"
    extra = "chatterbox"
    requires = ("torch", "chatterbox", "perth", "s3tokenizer")
    Settings = ChatterboxSettings
    settings: ChatterboxSettings
    Options = ChatterboxOptions

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        self.stats = ChatterboxStats()
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._voices: PerFileCache[Any] = PerFileCache()  # a clip's Conditionals
        self._transcriber: Any = None
        self._fallback: Any = None
        self._helpers_lock = threading.Lock()

    def describe(self) -> Capabilities:
        return Capabilities(
            sample_rate=SAMPLE_RATE,
            languages=self.settings.languages,
            max_input_chars=self.settings.max_input_chars,
            speed_range=(1.0, 1.0),  # the model has no rate control
            streaming=self.settings.candidates == 1,  # takes are judged whole
            cloning=True,
            concurrency=1,
            sampling=True,
        )

    def voices(self) -> list[Voice]:
        languages = self.settings.languages
        description = "The checkpoint's built-in voice; clone any other from a clip or profile."
        return [
            Voice(DEFAULT_VOICE, self.name, "Chatterbox", languages[0], description, SAMPLE_RATE,
                  languages)
        ]  # fmt: skip

    @functools.cached_property
    def device(self) -> str:
        device = self.settings.device
        if device == "cpu":
            return device
        import torch

        if torch.cuda.is_available():
            return "cuda" if device == "auto" else device
        if device == "auto":
            return "cpu"
        raise EngineUnavailableError(
            f"chatterbox is set to device {device!r}, but torch sees no CUDA device: set "
            "[engines.chatterbox] device (VOXSERVE_ENGINES__CHATTERBOX__DEVICE) to cpu or auto",
            code="engine_misconfigured",
        )

    def load(self) -> None:
        from voxserve.engines.chatterbox.loading import load_model

        with self._load_lock:
            if self._model is None:
                self._model = load_model(self.settings, self.device)

    def unload(self) -> None:
        with self._load_lock:
            model, self._model = self._model, None
        self._voices.clear()
        with self._helpers_lock:
            fallback, self._fallback = self._fallback, None
        if fallback is not None:
            fallback.unload()
        if model is not None and self.device.startswith("cuda"):
            import torch

            del model
            torch.cuda.empty_cache()

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        if self.settings.candidates > 1:
            yield from self._checked(text, options)
            return
        for samples in self._stream(text, self._call(text, options)):
            yield AudioChunk(samples, SAMPLE_RATE)

    # Streaming

    def _stream(self, text: str, call: _Call) -> Iterator[np.ndarray]:
        """``text``'s audio as T3 makes it: decoded every ``chunk_tokens``, joins crossfaded."""
        import torch

        from voxserve.engines.chatterbox.generation import speech_tokens
        from voxserve.engines.chatterbox.streaming import StreamingDecoder
        from voxserve.engines.chatterbox.watermark import StreamWatermarker

        model, settings = self._loaded(), self.settings
        generator = torch.Generator(device=model.device).manual_seed(call.seed)
        decoder = StreamingDecoder(
            model.s3gen, call.reference, flow_steps=settings.flow_steps,
            overlap=settings.crossfade_frames, generator=generator,
            max_tokens=call.sampling.max_new_tokens,
        )  # fmt: skip
        marker = StreamWatermarker(model.watermarker, SAMPLE_RATE) if settings.watermark else None
        text_tokens = model.tokenizer.text_to_tokens(_punctuated(text))
        tokens: list[int] = []
        next_decode = settings.first_chunk_tokens
        for token in speech_tokens(model.t3, call.voice, text_tokens, call.sampling, generator):
            tokens.append(token)
            self.stats.tokens += 1
            if len(tokens) >= next_decode:
                next_decode += settings.chunk_tokens
                if len(audio := self._decoded(decoder, marker, tokens, final=False)):
                    yield audio
        if len(audio := self._decoded(decoder, marker, tokens, final=True)):
            yield audio

    def _decoded(self, decoder, marker, tokens: list[int], final: bool) -> np.ndarray:
        import torch

        self.stats.decodes += 1
        with torch.inference_mode():  # a step's own: the next may run on another thread
            audio = decoder.push(tokens, final=final)
            return audio if marker is None else marker.push(audio, final=final)

    # Candidates checked by Whisper

    def _checked(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        """The best of ``candidates`` takes of ``text``; none close enough: its shorter pieces
        each the same way, then the fallback engine for a piece no take of says well."""
        limit = self.settings.candidate_max_wer
        best = self._best_take(text, options)
        if best.wer <= limit:
            yield AudioChunk(best.take, SAMPLE_RATE)
            return
        pieces = shorter_pieces(text, self.settings.candidate_min_chars)
        if pieces != [text]:
            self.stats.retries += 1
        for piece in pieces:
            take = best if pieces == [text] else self._best_take(piece, options)
            if take.wer <= limit or self.settings.fallback_engine is None:
                yield AudioChunk(take.take, SAMPLE_RATE)
            else:
                yield from self._spoken_by_fallback(piece)

    def _best_take(self, text: str, options: SynthesisOptions) -> Judged:
        call = self._call(text, options)
        seeds = [call.seed + index for index in range(self.settings.candidates)]

        def take(seed: int) -> np.ndarray:
            self.stats.takes += 1
            pieces = list(self._stream(text, replace(call, seed=seed)))
            return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

        return judge(text, map(take, seeds), self._hear)[0]

    def _hear(self, samples: np.ndarray) -> str:
        from voxserve.audio.transcribe import WHISPER_SAMPLE_RATE, Transcriber

        with self._helpers_lock:
            if self._transcriber is None:
                self._transcriber = Transcriber(self.settings.whisper_model)
        at_16k = StreamResampler(SAMPLE_RATE, WHISPER_SAMPLE_RATE).process(samples, last=True)
        return self._transcriber.transcribe_samples(at_16k)

    def _spoken_by_fallback(self, text: str) -> Iterator[AudioChunk]:
        self.stats.fallbacks += 1
        engine = self._fallback_engine()
        voice = engine.voices()[0].id
        resamplers: dict[int, StreamResampler] = {}
        for chunk in engine.synthesize(text, SynthesisOptions(voice=voice)):
            resampler = resamplers.setdefault(
                chunk.sample_rate, StreamResampler(chunk.sample_rate, SAMPLE_RATE)
            )
            yield AudioChunk(resampler.process(chunk.samples), SAMPLE_RATE)
        for resampler in resamplers.values():
            if len(rest := resampler.process(np.zeros(0, np.float32), last=True)):
                yield AudioChunk(rest, SAMPLE_RATE)

    def _fallback_engine(self) -> BlockingEngine:
        """``fallback_engine`` with its default settings, loaded on first use."""
        from voxserve.engines.registry import engine_class

        with self._helpers_lock:
            if self._fallback is None:
                cls = engine_class(self.settings.fallback_engine)
                if not issubclass(cls, BlockingEngine) or cls is type(self):
                    raise EngineUnavailableError(
                        f"engines.chatterbox.fallback_engine: {cls.name!r} cannot be a fallback "
                        "(a local engine other than chatterbox: piper, kokoro)",
                        code="engine_misconfigured",
                    )
                engine = cls(data_dir=self.data_dir)
                engine.load()
                self._fallback = engine
            return self._fallback

    # One call's voice and sampling

    def _call(self, text: str, options: SynthesisOptions) -> _Call:
        from voxserve.engines.chatterbox.generation import TokenSampling
        from voxserve.engines.chatterbox.loading import with_exaggeration

        settings, model = self.settings, self._loaded()
        extra = options.engine_options or ChatterboxOptions()
        requested = options.sampling
        if getattr(requested, "top_k", None) is not None:
            raise InvalidRequestError(
                "chatterbox samples with min_p and top_p, not top_k", param="sampling.top_k"
            )

        def chosen(name: str, request: float | None = None) -> float:
            """The request's, else the profile's or request's option, else the setting."""
            option = getattr(extra, name, None)
            return next(v for v in (request, option, getattr(settings, name)) if v is not None)

        seconds = RUNAWAY_BASE_SECONDS + RUNAWAY_SECONDS_PER_CHAR * len(text)
        cap = min(settings.max_new_tokens, math.ceil(seconds * TOKEN_RATE))
        cap = min(cap, getattr(requested, "max_new_tokens", None) or cap)
        sampling = TokenSampling(
            temperature=chosen("temperature", getattr(requested, "temperature", None)),
            cfg_weight=chosen("cfg_weight"),
            repetition_penalty=settings.repetition_penalty,
            min_p=settings.min_p,
            top_p=chosen("top_p", getattr(requested, "top_p", None)),
            max_new_tokens=cap,
        )
        seed = next(
            (s for s in (getattr(requested, "seed", None), settings.seed) if s is not None), None
        )
        voice = self._voice(options.reference_audio) if options.reference_audio else None
        voice = voice or model.default_voice
        return _Call(
            voice=with_exaggeration(voice, chosen("exaggeration")),
            reference=voice.gen,
            sampling=sampling,
            seed=random.randrange(2**32) if seed is None else seed,
        )

    def _voice(self, path: str) -> Any:
        """A clone's conditionals, made once per file version (path, mtime, size)."""
        return self._voices.get(path, self._conditionals)

    def _conditionals(self, path: str) -> Any:
        from voxserve.engines.chatterbox.loading import conditionals

        clip = reference_clip(path, SAMPLE_RATE, self.name, self.settings.max_reference_seconds,
                              shortest=0.5)  # fmt: skip
        return conditionals(self._loaded(), clip.samples)

    def _loaded(self) -> Any:
        model = self._model
        if model is None:
            raise EngineError("the chatterbox engine is not loaded", code="engine_not_loaded")
        return model


def _punctuated(text: str) -> str:
    """Upstream's ``punc_norm``: the punctuation T3 was trained on, a full stop at the end."""
    from chatterbox.tts import punc_norm

    return punc_norm(text)
