"""Higgs Audio V2 (Boson AI), on the native port in Hugging Face transformers.

A Llama-3.2-3B backbone with an audio FFN beside each layer's own (5.4B parameters in all) that
speaks text as audio codes (8 codebooks, 25 frames a second), and a codec that turns codes into
24 kHz audio. It clones a voice from a reference clip, follows a scene
description, gives each ``[SPEAKERn]`` of a dialogue its own voice, and streams: audio comes out
while the model is still generating.

How a call runs (``synthesize``):

1. prompt (``prompts``): system, scene, speaker descriptions, reference clips as example
   turns, the last chunks of the same text (``context``), then the text;
2. generation (``generation``): a worker thread runs ``generate``, batching requests that
   arrive together, and hands this call its code columns step by step; closing the call's
   generator cancels its row within one step;
3. decoding (``streaming``): the delay pattern undone column by column, frames decoded in
   overlapping windows, trailing silence held back and dropped.

torchaudio: the codec's module imports it; where no working torchaudio is installed (the index
only has CUDA builds, which fail beside CPU torch), ``torchaudio_compat`` supplies the one function
the codec uses. Loading: ``loading``; settings: ``settings``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from voxserve.audio.frames import AudioChunk
from voxserve.engines.base import Capabilities, SettingsGiven, SynthesisOptions, Voice
from voxserve.engines.builtin_voices import BUILTIN_VOICES, builtin_voice
from voxserve.engines.higgs.context import ContextMemory
from voxserve.engines.higgs.loading import SAMPLE_RATE, Runtime
from voxserve.engines.higgs.settings import HiggsSettings
from voxserve.engines.transformers_engine import TransformersEngine
from voxserve.request import Sampling

if TYPE_CHECKING:  # torch and transformers load with the model, not with this module
    from voxserve.engines.higgs.prompts import PromptTokens, SpeakerVoice, Spoken

DEFAULT_VOICE = "higgs"
# Generation is capped at 3 s plus 0.4 s per character (several times the slowest speech, even in
# Chinese): a model that never ends its stream stops there instead of at max_new_tokens.
RUNAWAY_BASE_SECONDS = 3.0
RUNAWAY_SECONDS_PER_CHAR = 0.4


class HiggsEngine(TransformersEngine):
    name = "higgs"
    extra = "higgs"
    requires = ("torch", "transformers")
    Settings = HiggsSettings
    settings: HiggsSettings

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        self.memory = ContextMemory(self.settings.context_chunks, self.settings.seed)

    def describe(self) -> Capabilities:
        return Capabilities(
            sample_rate=SAMPLE_RATE,
            languages=self.settings.languages,
            max_input_chars=self.settings.max_input_chars,
            speed_range=(1.0, 1.0),  # the model has no rate control
            streaming=True,
            cloning=True,
            instructions=True,
            concurrency=self.max_batch,
            carries_context=True,
            sampling=True,
            multi_speaker=True,
        )

    def voices(self) -> list[Voice]:
        # One model speaks every configured language, in any of its voices.
        languages = self.settings.languages

        def voice(voice_id: str, name: str, description: str) -> Voice:
            return Voice(
                voice_id, self.name, name, languages[0], description, SAMPLE_RATE, languages
            )

        smart = voice(
            DEFAULT_VOICE,
            "Smart voice",
            "No reference: the model picks a voice that suits the text and the scene.",
        )
        described = [voice(item.id, item.name, item.speaker_description) for item in BUILTIN_VOICES]
        return [smart, *described]

    def _load_runtime(self) -> Runtime:
        from voxserve.engines.higgs.loading import load_runtime

        return load_runtime(self.settings, self.device, self.max_batch)

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        import torch

        from voxserve.engines.higgs.generation import GenerationJob
        from voxserve.engines.higgs.loading import decode_frames
        from voxserve.engines.higgs.prompts import Spoken
        from voxserve.engines.higgs.streaming import (
            DelayPatternUndoer,
            SilenceTrimmer,
            WindowedDecoder,
        )

        runtime = self._loaded()
        state = self.memory.recall(
            options.context_id, dataclasses.replace(options, context_id=None)
        )
        prompt = self.prompt(text, options, history=tuple(state.history) if state else ())
        requested = options.sampling or Sampling()
        seed = state.seed if state else self.settings.seed
        overrides = {
            name: value
            for name in ("temperature", "top_p", "top_k")
            if (value := getattr(requested, name)) is not None
        }
        job = GenerationJob(
            prompt,
            max_new_tokens=min(
                self._token_cap(text, runtime), requested.max_new_tokens or math.inf
            ),
            seed=requested.seed if requested.seed is not None else seed,
            sampling=dataclasses.replace(runtime.worker.sampling, **overrides),
        )
        config = runtime.model.config
        undoer = DelayPatternUndoer(
            runtime.codebooks, config.audio_stream_bos_id, config.audio_stream_eos_id
        )
        decoder = WindowedDecoder(
            functools.partial(decode_frames, runtime.codec),
            runtime.samples_per_frame,
            window=self.settings.chunk_frames,
            first_window=self.settings.first_chunk_frames,
            context=self.settings.decode_context_frames,
            crossfade=round(self.settings.crossfade_ms * SAMPLE_RATE / 1000),
        )
        trimmer = SilenceTrimmer(SAMPLE_RATE)
        runtime.worker.submit(job)
        try:
            for column in job.columns():
                for frame in undoer.push(column):
                    samples = decoder.push(frame)
                    if samples is not None and len(audible := trimmer.process(samples)):
                        yield AudioChunk(audible, SAMPLE_RATE)
                if undoer.ended:
                    break
            audible = trimmer.process(decoder.finish())
            trimmer.finish()
            if len(audible):
                yield AudioChunk(audible, SAMPLE_RATE)
            if state is not None and decoder.frames:
                self.memory.remember(state, Spoken(torch.stack(decoder.frames, dim=1), text))
        finally:  # also when the consumer closes us early: the row stops within a step
            job.cancel()

    def prompt(
        self, text: str, options: SynthesisOptions, history: tuple[Spoken, ...] = ()
    ) -> PromptTokens:
        """The prompt a call speaks ``text`` with (``history``: earlier chunks, oldest first)."""
        from voxserve.engines.higgs.prompts import build_conversation, render

        runtime = self._loaded()
        conversation = build_conversation(
            text,
            scene=options.instructions or self.settings.scene,
            speakers=self._speakers(text, options),
            history=history,
        )
        with self._prompt_lock:
            return render(runtime.processor, conversation)

    def _speakers(self, text: str, options: SynthesisOptions) -> list[SpeakerVoice]:
        from voxserve.engines.higgs.prompts import SpeakerVoice, speaker_tags

        tags = [prompt.tag for prompt in options.speakers]
        tags += [tag for tag in speaker_tags(text) if tag not in tags]
        if tags:
            given = {prompt.tag: prompt for prompt in options.speakers}
            voices = []
            for tag in tags:
                prompt = given.get(tag)
                if prompt is None:
                    voices.append(SpeakerVoice(tag))
                    continue
                reference = self._reference(prompt.reference_audio, prompt.reference_text)
                voices.append(SpeakerVoice(tag, prompt.description, reference))
            return voices
        builtin = builtin_voice(options.voice)
        description = options.speaker_description or (
            builtin.speaker_description if builtin else None
        )
        reference = self._reference(options.reference_audio, options.reference_text)
        if description is None and reference is None:
            return []  # the smart voice: the model chooses
        return [SpeakerVoice(None, description, reference)]

    def _reference(self, path: str | None, transcript: str | None) -> Spoken | None:
        """A reference clip's codes (encoded once per file version) and transcript."""
        from voxserve.engines.higgs.prompts import Spoken

        if path is None:
            return None
        return Spoken(self._reference_codes(path), (transcript or "").strip() or None)

    def _token_cap(self, text: str, runtime: Runtime) -> int:
        seconds = RUNAWAY_BASE_SECONDS + RUNAWAY_SECONDS_PER_CHAR * len(text)
        # + the delay pattern's opening column and the codebooks' staggered ends
        steps = math.ceil(seconds * runtime.frame_rate) + runtime.codebooks + 1
        return min(self.settings.max_new_tokens, steps)
