"""Streaming speech to text for voice chat: 16 kHz PCM frames in, transcript events out.

A `Listener` (one per connection) runs Silero VAD v6 over each frame as it arrives, keeps the
audio of the utterance being spoken, and hears it with a `Transcriber` (Whisper):

    speech_started   the VAD heard speech begin
    partial          a draft of the words so far, while the user speaks (greedy decoding)
    tentative        the whole utterance, heard after a short pause (`speculate_after_ms`)
                     that may still turn out to be mid-sentence: a reply can start on it
    speech_resumed   the user spoke again after a tentative transcript: drop it
    final            the whole utterance, once `end_of_speech_ms` of silence follows it

The tentative transcript is why a reply can begin long before the end of speech is certain: when
the pause does last, the final is that same transcript, and whatever was started on it stands.

Silero VAD v6 ships inside faster-whisper as ONNX, so nothing is downloaded. Its model is a
sequence model: each 512-sample window (32 ms) is fed with the 64 samples before it and the
LSTM state (h, c) the previous window left, which `VadStream` carries from frame to frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from voxserve.config import ChatSettings
from voxserve.errors import EngineUnavailableError, VoxserveError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The rate of the frames a `Listener` takes (16-bit little-endian mono PCM)."""

MAX_FRAME_SECONDS = 1.0
"""The longest frame `Listener.push` takes; browsers send 20-40 ms."""

VAD_WINDOW = 512
"""Samples per VAD decision (32 ms): the only window Silero v6 takes at 16 kHz."""

VAD_CONTEXT = 64
"""Samples of the previous window fed in front of each window."""

_FLOAT32_MIN_SAMPLES = 32  # fewer float32 samples are too few to tell
_FLOAT32_BAND = (97 << 7, 127 << 7)  # upper words (sign aside) of 2**-30 <= |x| < 1
_FLOAT32_SHARE = 0.5  # of the upper words in that band or silent: float32 (speech in 16 bits: <0.3)
_PRE_ROLL_SECONDS = 0.3  # audio kept before the onset: the VAD triggers a window or two late
_TAIL_SECONDS = 0.2  # silence kept after the end of speech, so the last word is not clipped

EventKind = Literal["speech_started", "partial", "tentative", "speech_resumed", "final"]


@dataclass(frozen=True)
class TranscriptEvent:
    """Something a `Listener` heard."""

    kind: EventKind
    """See the module's docstring."""

    text: str = ""
    """The words heard so far (partial) or in the whole utterance (tentative, final); else ""."""

    start: float = 0.0
    """Where the utterance starts, in seconds since the stream's first frame."""

    end: float = 0.0
    """Where the audio heard ends (partial), or where speech ended (final), in stream seconds."""

    heard_in: float = 0.0
    """Seconds Whisper took to hear the utterance (tentative, final); else 0."""


class SpeechToText(Protocol):
    """What a `Listener` needs of a transcriber; `voxserve.audio.transcribe.Transcriber` fits."""

    def load(self) -> None:
        """Load the model now. Blocking."""
        ...

    def transcribe_samples(
        self, samples: np.ndarray, *, beam_size: int = 5, window_s: float = 30.0
    ) -> str:
        """The words in float32 16 kHz mono `samples`, heard in a `window_s` window; "" for
        none. Blocking."""
        ...


class SileroVad:
    """Silero VAD v6 from faster-whisper's assets; the ONNX session loads on first use.

    One instance serves any number of streams and threads: ONNX Runtime sessions take concurrent
    runs, and each stream keeps its own state.
    """

    def __init__(self, model_path: str | None = None) -> None:
        self.model_path = model_path
        """The ONNX file; None: ``silero_vad_v6.onnx`` inside faster-whisper."""
        self._session: Any = None
        self._load_lock = threading.Lock()

    def load(self) -> None:
        """Load the model now, if not loaded yet; raises EngineUnavailableError if it can't."""
        if self._session is None:
            with self._load_lock:
                if self._session is None:
                    self._session = self._load_session()

    def stream(self) -> VadStream:
        """A fresh stream of speech probabilities, for one audio stream."""
        return VadStream(self)

    def run(
        self, windows: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Speech probabilities of consecutive windows, shape (n, 576); returns (probs, h, c)."""
        self.load()
        probs, h, c = self._session.run(None, {"input": windows, "h": h, "c": c})
        return np.asarray(probs, dtype=np.float32).reshape(-1), h, c

    def _load_session(self) -> Any:
        try:
            import onnxruntime
            from faster_whisper.utils import get_assets_path
        except ImportError as error:
            raise EngineUnavailableError(
                "voice activity detection needs the stt extra: pip install 'voxserve[stt]'",
                code="stt_not_installed",
            ) from error
        path = self.model_path or os.path.join(get_assets_path(), "silero_vad_v6.onnx")
        options = onnxruntime.SessionOptions()
        # A window is ~0.1 ms of work: more threads only add hand-off cost, and many
        # connections run side by side anyway.
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.log_severity_level = 4
        try:
            return onnxruntime.InferenceSession(
                path, providers=["CPUExecutionProvider"], sess_options=options
            )
        except Exception as error:  # ONNX Runtime raises its own exception types
            raise EngineUnavailableError(
                f"could not load the Silero VAD model at {path}: {error}", code="vad_model_missing"
            ) from error


_shared_vad = SileroVad()


class VadStream:
    """Speech probabilities for one stream, fed in pieces of any length."""

    def __init__(self, vad: SileroVad) -> None:
        self._vad = vad
        self.reset()

    def reset(self) -> None:
        """Forget the audio heard: the next sample starts a new stream."""
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(VAD_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    @property
    def pending(self) -> int:
        """Samples waiting for a whole window."""
        return len(self._pending)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Speech probabilities for each window completed by `samples` (possibly none)."""
        audio = np.concatenate([self._pending, samples])
        count = len(audio) // VAD_WINDOW
        self._pending = audio[count * VAD_WINDOW :]
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        # Each window is fed with the last 64 samples before it (the previous window's tail).
        with_context = np.concatenate([self._context, audio[: count * VAD_WINDOW]])
        rows = [
            with_context[i * VAD_WINDOW : i * VAD_WINDOW + VAD_CONTEXT + VAD_WINDOW]
            for i in range(count)
        ]
        self._context = audio[count * VAD_WINDOW - VAD_CONTEXT : count * VAD_WINDOW].copy()
        probs, self._h, self._c = self._vad.run(np.stack(rows), self._h, self._c)
        return probs


class Listener:
    """Hears one connection's microphone: push 16 kHz s16le mono frames, get transcript events.

    Not safe to share between tasks: push frames from one task, in order. The push that ends an
    utterance waits for its final transcript (frames arriving meanwhile wait in the transport);
    partial transcripts run in the background, at most one at a time, and come back from a
    later push.
    """

    def __init__(
        self,
        transcriber: SpeechToText,
        *,
        end_of_speech_ms: int = 500,
        speculate_after_ms: int | None = 64,
        min_speech_ms: int = 200,
        partial_interval_ms: int = 1000,
        vad_threshold: float = 0.5,
        max_utterance_s: float = 30.0,
        window_s: float = 10.0,
        beam_size: int = 1,
        vad: SileroVad | None = None,
    ) -> None:
        if not 0 < vad_threshold < 1:
            raise ValueError(f"vad_threshold must be between 0 and 1, got {vad_threshold}")
        self.transcriber = transcriber
        self.vad_threshold = vad_threshold
        self.window_s = window_s
        """The window Whisper hears an utterance in (see `Transcriber.transcribe_samples`)."""
        self.beam_size = beam_size
        """Whisper's beam for whole utterances; drafts are always greedy (1)."""
        # Hysteresis: speech ends only when the probability falls well below the onset threshold.
        self.vad_release = max(vad_threshold - 0.15, 0.01)
        self._end_of_speech = round(end_of_speech_ms * SAMPLE_RATE / 1000)
        # None, or not shorter than the end of speech: no tentative transcripts.
        self._speculate_after = (
            round(speculate_after_ms * SAMPLE_RATE / 1000)
            if speculate_after_ms is not None and speculate_after_ms < end_of_speech_ms
            else None
        )
        self._min_speech = round(min_speech_ms * SAMPLE_RATE / 1000)
        self._partial_interval = round(partial_interval_ms * SAMPLE_RATE / 1000)
        self._max_utterance = round(max_utterance_s * SAMPLE_RATE)
        self._pre_roll = round(_PRE_ROLL_SECONDS * SAMPLE_RATE)
        self._tail = round(_TAIL_SECONDS * SAMPLE_RATE)
        self._vad_model = vad or _shared_vad
        self._vad = self._vad_model.stream()
        self._position = 0  # stream position (samples) of the next VAD window
        self._utterance_id = 0
        self._partial: tuple[int, asyncio.Future[str]] | None = None
        self._start_listening()

    @classmethod
    def for_chat(cls, transcriber: SpeechToText, settings: ChatSettings) -> Listener:
        """A listener tuned by the ``[chat]`` settings."""
        return cls(
            transcriber,
            end_of_speech_ms=settings.end_of_speech_ms,
            speculate_after_ms=settings.speculate_after_ms if settings.speculate else None,
            min_speech_ms=settings.min_speech_ms,
            partial_interval_ms=settings.partial_interval_ms,
            vad_threshold=settings.vad_threshold,
            window_s=settings.stt_window_s,
            beam_size=settings.stt_beam_size,
        )

    def warm_up(self) -> None:
        """Load the VAD and Whisper now rather than at the first utterance, and have Whisper hear
        a second of silence in this listener's window: its first run is slower (tiny.en, two
        cores: ~310 ms where the next ones take ~235). Blocking."""
        self._vad_model.load()
        self.transcriber.load()
        silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
        self.transcriber.transcribe_samples(
            silence, beam_size=self.beam_size, window_s=self.window_s
        )

    @property
    def speaking(self) -> bool:
        """Whether the user is in the middle of an utterance."""
        return self._speech_start is not None

    async def push(self, frame: bytes) -> list[TranscriptEvent]:
        """Hear the next frame; returns the events it (or a finished partial) brought."""
        samples = _frame_samples(frame)
        events = self._collect_partial() + self._collect_guess()
        probs = self._vad.process(samples)
        self._keep(samples)
        for prob in probs:
            window_start = self._position
            self._position += VAD_WINDOW
            events += await self._decide(float(prob), window_start)
        return events

    def reset(self) -> None:
        """Drop the audio heard and any utterance in progress (e.g. when listening stops).

        The stream clock keeps running: later events stay in the stream's own time.
        """
        self._position += self._vad.pending
        self._vad.reset()
        self._utterance_id += 1  # a partial still running belongs to nobody now
        self._start_listening()

    # --- the state machine ----------------------------------------------------------------

    def _start_listening(self) -> None:
        self._audio: list[np.ndarray] = []  # since `_audio_start`: pre-roll, then the utterance
        self._audio_length = 0
        self._audio_start = self._position + self._vad.pending
        self._speech_start: int | None = None
        self._silence_start: int | None = None
        self._next_partial = 0
        self._guess: _Guess | None = None  # the transcript of the utterance up to this pause

    async def _decide(self, prob: float, window_start: int) -> list[TranscriptEvent]:
        window_end = window_start + VAD_WINDOW
        if self._speech_start is None:
            if prob < self.vad_threshold:
                self._trim_to(window_end - self._pre_roll)
                return []
            return [self._begin_utterance(window_start)]
        events = []
        if prob >= self.vad_threshold:
            self._silence_start = None
            if self._guess is not None:  # not the end after all
                if self._guess.told:
                    at = window_start / SAMPLE_RATE
                    events.append(TranscriptEvent("speech_resumed", start=at, end=at))
                self._guess = None
        elif prob < self.vad_release and self._silence_start is None:
            self._silence_start = window_start
        if self._silence_start is not None:
            silence = window_end - self._silence_start
            if silence >= self._end_of_speech:
                return await self._end_utterance(self._silence_start)
            if (
                self._guess is None
                and self._speculate_after is not None
                and silence >= self._speculate_after
                and self._silence_start - self._speech_start >= self._min_speech
            ):
                self._start_guess(self._silence_start)
        elif window_end - self._speech_start >= self._max_utterance:
            # Still speaking after max_utterance_s: close this utterance, go on with a new one.
            events = await self._end_utterance(window_end)
            return [*events, self._begin_utterance(window_end)]
        elif window_end >= self._next_partial:
            self._start_partial(window_end)
        return events

    def _begin_utterance(self, start: int) -> TranscriptEvent:
        self._speech_start = start
        self._silence_start = None
        self._next_partial = start + self._partial_interval
        return TranscriptEvent("speech_started", start=start / SAMPLE_RATE, end=start / SAMPLE_RATE)

    async def _end_utterance(self, speech_end: int) -> list[TranscriptEvent]:
        start = self._speech_start
        assert start is not None
        guess, self._guess = self._guess, None
        samples = self._audio_between(self._audio_start, speech_end + self._tail)
        self._utterance_id += 1
        self._trim_to(self._position - self._pre_roll)
        self._speech_start = self._silence_start = None
        if speech_end - start < self._min_speech:
            return []
        heard = None
        if guess is not None and guess.speech_end == speech_end:
            # The same audio: heard already, or being heard. A failed guess is heard again.
            with contextlib.suppress(VoxserveError):
                heard = await guess.future
        text, seconds = heard or await self._hear(samples)
        if not text:
            return []
        return [
            TranscriptEvent("final", text, start / SAMPLE_RATE, speech_end / SAMPLE_RATE, seconds)
        ]

    async def _hear(self, samples: np.ndarray) -> tuple[str, float]:
        """A whole utterance's words, and the seconds it took to hear them."""
        started = time.monotonic()
        text = await self._transcribe(samples)
        return text, time.monotonic() - started

    async def _transcribe(self, samples: np.ndarray, beam_size: int | None = None) -> str:
        return await asyncio.to_thread(
            self.transcriber.transcribe_samples,
            samples,
            beam_size=beam_size or self.beam_size,
            window_s=self.window_s,
        )

    # --- partial transcripts --------------------------------------------------------------

    def _start_partial(self, end: int) -> None:
        if self._partial is not None:
            return  # one in flight already: skip this one
        self._next_partial = end + self._partial_interval
        samples = self._audio_between(self._audio_start, end)
        future = asyncio.ensure_future(self._transcribe(samples, beam_size=1))
        self._partial = (self._utterance_id, future)
        self._partial_end = end

    def _collect_partial(self) -> list[TranscriptEvent]:
        if self._partial is None or not self._partial[1].done():
            return []
        utterance_id, future = self._partial
        self._partial = None
        try:
            text = future.result()
        except VoxserveError as error:  # a draft is not worth failing the connection for
            logger.warning("partial transcription failed: %s", error)
            return []
        if utterance_id != self._utterance_id or not text or self._speech_start is None:
            return []
        start, end = self._speech_start / SAMPLE_RATE, self._partial_end / SAMPLE_RATE
        return [TranscriptEvent("partial", text, start, end)]

    # --- tentative transcripts ------------------------------------------------------------

    def _start_guess(self, speech_end: int) -> None:
        samples = self._audio_between(self._audio_start, speech_end + self._tail)
        self._guess = _Guess(speech_end, asyncio.ensure_future(self._hear(samples)))

    def _collect_guess(self) -> list[TranscriptEvent]:
        guess = self._guess
        if guess is None or guess.told or not guess.future.done():
            return []
        guess.told = True
        try:
            text, seconds = guess.future.result()
        except VoxserveError as error:  # the final will try again, and report it
            logger.warning("tentative transcription failed: %s", error)
            return []
        if not text:
            return []
        assert self._speech_start is not None
        start, end = self._speech_start / SAMPLE_RATE, guess.speech_end / SAMPLE_RATE
        return [TranscriptEvent("tentative", text, start, end, seconds)]

    # --- audio kept -----------------------------------------------------------------------

    def _keep(self, samples: np.ndarray) -> None:
        if len(samples):
            self._audio.append(samples)
            self._audio_length += len(samples)

    def _trim_to(self, position: int) -> None:
        """Forget the audio before stream `position`."""
        drop = min(position - self._audio_start, self._audio_length)
        if drop <= 0:
            return
        audio = np.concatenate(self._audio)[drop:]
        self._audio = [audio] if len(audio) else []
        self._audio_length = len(audio)
        self._audio_start += drop

    def _audio_between(self, start: int, end: int) -> np.ndarray:
        audio = np.concatenate(self._audio) if self._audio else np.zeros(0, dtype=np.float32)
        self._audio = [audio] if len(audio) else []
        return audio[max(start - self._audio_start, 0) : max(end - self._audio_start, 0)].copy()


@dataclass
class _Guess:
    speech_end: int
    """Where the pause it was heard at began."""
    future: asyncio.Future[tuple[str, float]]
    told: bool = False
    """Whether a tentative event went out for it."""


def _frame_samples(frame: bytes) -> np.ndarray:
    """Float32 samples of a 16-bit little-endian PCM frame; ValueError for a malformed frame."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise ValueError(f"an audio frame must be bytes, got {type(frame).__name__}")
    size = len(memoryview(frame).cast("B"))
    if size % 2:
        raise ValueError(
            f"an audio frame must be 16-bit PCM (an even number of bytes), got {size} bytes"
        )
    if size > MAX_FRAME_SECONDS * SAMPLE_RATE * 2:
        raise ValueError(
            f"an audio frame must hold at most {MAX_FRAME_SECONDS:g} s of 16 kHz audio "
            f"({int(MAX_FRAME_SECONDS * SAMPLE_RATE * 2)} bytes), got {size} bytes"
        )
    words = np.frombuffer(frame, dtype="<i2")
    if _looks_like_float32(words):
        raise ValueError(
            "the audio frames look like 32-bit float samples: send 16-bit signed little-endian "
            "PCM (s16le), mono, 16 kHz"
        )
    return words.astype(np.float32) / 32768.0


def _looks_like_float32(words: np.ndarray) -> bool:
    """Whether 16-bit words are float32 audio read two words a sample (a common client bug).

    A float32 sample's upper word is its sign, exponent and top of its mantissa: for audio
    between -180 dBFS and full scale it lies in a band of 3840 values (its sign aside), where the
    upper words of real 16-bit speech or noise seldom fall. Silence is all zeros in any format.
    """
    if len(words) < 2 * _FLOAT32_MIN_SAMPLES or len(words) % 2:
        return False
    low, high = words[0::2], words[1::2].view(np.uint16) & 0x7FFF
    in_band = (high >= _FLOAT32_BAND[0]) & (high < _FLOAT32_BAND[1])
    zero = (high == 0) & (low == 0)
    return bool(in_band.any()) and float(np.mean(in_band | zero)) >= _FLOAT32_SHARE
