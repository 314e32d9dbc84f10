"""Sesame CSM-1B, on the native port in Hugging Face transformers (``CsmForConditionalGeneration``).

A Llama-3.2-1B backbone that draws the first codebook of each Mimi frame (12.5 frames a second,
32 codebooks), a small depth decoder that draws the other 31, and Mimi, which turns codes into
24 kHz audio. It speaks English as a conversation: each turn hears the turns before it, their text
and their audio, and goes on in its speaker's voice.

How a call runs (``synthesize``):

1. prompt (``prompts``): a cloned voice's clip and transcript, the render's earlier turns
   (``context_id``: a dialogue's turns, a long text's segments; bounded by ``context_turns`` and
   ``context_seconds``), then the text for the voice's speaker;
2. generation (``generation``): a worker thread runs ``generate``, batching requests that arrive
   together, and hands this call its frames step by step; closing the call's generator cancels its
   row within one step;
3. decoding: Mimi decodes windows of frames after a few frames of left context (its decoder is
   causal: a window needs no look-ahead), so each window's samples are a one-shot decode's
   (``higgs.streaming.WindowedDecoder``); leading and trailing silence is dropped.

Speaker roles (``/ws/tts``'s 0-3, the top-level ``speakers`` setting): 0 and 2 are CSM's first
speaker (``csm_0``, ``[0]``), 1 and 3 its second (``csm_1``, ``[1]``), as the TTS-provider server
mapped them. Loading: ``loading``; settings: ``settings``; a random checkpoint: ``random_model``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from voxserve.audio.frames import AudioChunk
from voxserve.engines.base import Capabilities, SettingsGiven, SynthesisOptions, Voice
from voxserve.engines.csm.settings import CsmSettings
from voxserve.engines.higgs.context import ContextMemory
from voxserve.engines.higgs.engine import RUNAWAY_BASE_SECONDS, RUNAWAY_SECONDS_PER_CHAR
from voxserve.engines.transformers_engine import SAMPLE_RATE, TransformersEngine
from voxserve.errors import InvalidRequestError
from voxserve.request import Sampling

if TYPE_CHECKING:  # torch and transformers load with the model, not with this module
    from voxserve.engines.csm.loading import Runtime
    from voxserve.engines.csm.prompts import CsmPrompt, Turn

LANGUAGE = "en-US"
FRAME_RATE = 12.5
"""Mimi frames a second: CSM generates one a step."""


class CsmEngine(TransformersEngine):
    name = "csm"
    extra = "higgs"  # the same packages: torch, transformers, huggingface-hub
    requires = ("torch", "transformers")
    Settings = CsmSettings
    settings: CsmSettings

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        # One conversation per context id, across voices: a dialogue's speakers share it.
        self.memory = ContextMemory(self.settings.context_turns, self.settings.seed)

    def describe(self) -> Capabilities:
        return Capabilities(
            sample_rate=SAMPLE_RATE,
            languages=(LANGUAGE,),
            max_input_chars=self.settings.max_input_chars,
            speed_range=(1.0, 1.0),  # the model has no rate control
            streaming=True,
            cloning=True,
            concurrency=self.max_batch,
            carries_context=True,
            sampling=True,
        )

    def voices(self) -> list[Voice]:
        return [
            Voice(
                f"csm_{speaker}", self.name, f"CSM speaker {speaker}", LANGUAGE,
                f"Sesame CSM's {which} conversational speaker ([{speaker}]): speaker roles "
                f"{speaker} and {speaker + 2}.",
                SAMPLE_RATE,
            )
            for speaker, which in ((0, "first"), (1, "second"))
        ]  # fmt: skip

    def _load_runtime(self) -> Runtime:
        from voxserve.engines.csm.loading import load_runtime

        return load_runtime(self.settings, self.device, self.max_batch)

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        import torch

        from voxserve.engines.csm.generation import Sampler
        from voxserve.engines.csm.prompts import Turn, voice_key
        from voxserve.engines.higgs.generation import GenerationJob
        from voxserve.engines.higgs.loading import decode_frames
        from voxserve.engines.higgs.streaming import SilenceTrimmer, WindowedDecoder

        check_language(options.language)
        runtime = self._loaded()
        state = self.memory.recall(options.context_id, self.name)  # every voice: one history
        prompt, frames = self.prompt(text, options, tuple(state.history) if state else ())
        requested = options.sampling or Sampling()
        configured = runtime.worker.sampling
        seed = state.seed if state else self.settings.seed
        job = GenerationJob(
            prompt,
            max_new_tokens=min(frames, requested.max_new_tokens or math.inf),
            seed=requested.seed if requested.seed is not None else seed,
            sampling=Sampler(
                requested.temperature or configured.temperature,
                requested.top_k or configured.top_k,
                requested.top_p or configured.top_p,
            ),
        )
        decoder = WindowedDecoder(
            functools.partial(decode_frames, runtime.codec),
            runtime.samples_per_frame,
            window=self.settings.chunk_frames,
            first_window=self.settings.first_chunk_frames,
            context=self.settings.decode_context_frames,
            crossfade=0,
            lookahead=0,
        )
        trimmer = SilenceTrimmer(SAMPLE_RATE)
        runtime.worker.submit(job)
        try:
            for frame in job.columns():
                samples = decoder.push(frame)
                if samples is not None and len(audible := trimmer.process(samples)):
                    yield AudioChunk(audible, SAMPLE_RATE)
            audible = trimmer.process(decoder.finish())
            trimmer.finish()
            if len(audible):
                yield AudioChunk(audible, SAMPLE_RATE)
            if state is not None and decoder.frames:
                spoken = torch.stack(decoder.frames)
                key = voice_key(options.voice, options.reference_audio)
                self.memory.remember(state, Turn(prompt.speaker, text, spoken, key))
        finally:  # also when the consumer closes us early: the row stops within a step
            job.cancel()

    def prompt(
        self, text: str, options: SynthesisOptions, history: Sequence[Turn] = ()
    ) -> tuple[CsmPrompt, int]:
        """The prompt a call speaks ``text`` with (``history``: the render's earlier turns,
        oldest first), and the frames it may generate. The oldest turns are left out beyond
        ``context_seconds``, and where the prompt and its frames would outgrow the model's
        positions."""
        from voxserve.engines.csm.prompts import render, speaker_for, voice_key

        runtime = self._loaded()
        speaker = speaker_for(options.voice, voice_key(options.voice, options.reference_audio),
                              history)  # fmt: skip
        reference = self._reference(options.reference_audio, options.reference_text, speaker)
        cap = self._frame_cap(text)
        positions = runtime.model.config.max_position_embeddings
        turns = _recent(history, self.settings.context_seconds)
        while True:
            with self._prompt_lock:
                prompt = render(runtime.processor, [*reference, *turns], speaker, text)
            if len(prompt) + cap <= positions or not turns:
                break
            turns = turns[1:]
        if len(prompt) >= positions:
            raise InvalidRequestError(
                f"the reference clip and text take {len(prompt)} of csm's {positions} positions",
                param="voice",
                code="reference_too_long",
            )
        return prompt, min(cap, positions - len(prompt))

    def _frame_cap(self, text: str) -> int:
        # 3 s plus 0.4 s per character, as Higgs caps a stream the model never ends
        seconds = RUNAWAY_BASE_SECONDS + RUNAWAY_SECONDS_PER_CHAR * len(text)
        return max(1, math.ceil(min(seconds, self.settings.max_audio_seconds) * FRAME_RATE))

    def _reference(self, path: str | None, transcript: str | None, speaker: int) -> list[Turn]:
        """A clip to clone as the speaker's earlier turn (none without a clip)."""
        from voxserve.engines.csm.prompts import Turn

        if path is None:
            return []
        codes = self._reference_codes(path).T  # frames x codebooks, as CSM's frames come
        return [Turn(speaker, (transcript or "").strip(), codes)]


def check_language(language: str | None) -> None:
    """CSM speaks English only: any other language is refused, naming the field."""
    if language and language.split("-")[0].lower() != "en":
        raise InvalidRequestError(
            f"csm speaks English ({LANGUAGE}) only, not {language!r}",
            param="language",
            code="unsupported_language",
        )


def _recent(history: Sequence[Turn], seconds: float) -> list[Turn]:
    """The latest turns whose audio fits in ``seconds``, oldest first."""
    kept: list[Turn] = []
    total = 0.0
    for turn in reversed(history):
        total += turn.frames / FRAME_RATE
        if total > seconds:
            break
        kept.append(turn)
    return kept[::-1]
