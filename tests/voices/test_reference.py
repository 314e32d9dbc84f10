"""Reference clips: real speech from the embedded voice, in every format a user may upload."""

from __future__ import annotations

import io
import re
import sys
import threading
import time
import wave

import av
import numpy as np
import pytest

from voxserve.audio import create_encoder, decode_audio
from voxserve.audio.transcribe import Transcriber
from voxserve.errors import EngineUnavailableError, InvalidRequestError
from voxserve.request import SpeechRequest
from voxserve.voices import reference
from voxserve.voices.reference import ReferenceAudio, ReferenceLimits, prepare_reference

SENTENCE = (
    "The quick brown fox jumps over the lazy dog. "
    "Please remember to bring your umbrella tomorrow morning."
)
DEFAULTS = ReferenceLimits()
TARGET_DBFS = DEFAULTS.target_dbfs
MARGINS = 2 * 0.15  # what trimming keeps around the speech
_SOUNDING_DBFS = -50.0  # speech, not the near-silence around it (the padding's noise is -55)


class Speech:
    """The embedded voice saying SENTENCE, and the same speech padded with silence and noise."""

    def __init__(self, samples: np.ndarray, sample_rate: int) -> None:
        self.samples = samples
        self.rate = sample_rate
        self.seconds = len(samples) / sample_rate
        # Piper leaves ~50 ms of near-silence before the speech and ~150 ms after it, and how
        # much varies from run to run: what trimming keeps is the sounding part and its margins,
        # to within its 50 ms analysis frames at each end.
        frame = sample_rate // 100
        levels = 10 * np.log10(
            np.mean(np.square(samples[: len(samples) // frame * frame].reshape(-1, frame)), 1)
            + 1e-12
        )
        sounding = np.flatnonzero(levels > _SOUNDING_DBFS)
        self.kept_seconds = (sounding[-1] + 1 - sounding[0]) * frame / sample_rate + MARGINS
        noise = np.random.default_rng(7).normal(0, 10 ** (-55 / 20), 2 * sample_rate)
        self.padded = np.concatenate(
            [
                np.zeros(sample_rate, dtype=np.float32),  # digital silence
                noise[:sample_rate],  # then room noise at -55 dBFS
                samples,
                noise[sample_rate:],
            ]
        ).astype(np.float32)


@pytest.fixture(scope="module")
async def speech(piper_synthesizer) -> Speech:
    chunks = [chunk async for chunk in piper_synthesizer.stream(SpeechRequest(input=SENTENCE))]
    return Speech(np.concatenate([chunk.samples for chunk in chunks]), chunks[0].sample_rate)


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber()


# --- building uploads -------------------------------------------------------------------------


def encoded(fmt: str, samples: np.ndarray, sample_rate: int) -> bytes:
    """A whole file written by voxserve's own encoders (wav, mp3, flac, opus in ogg, aac)."""
    encoder = create_encoder(fmt, sample_rate)
    return encoder.encode(samples) + encoder.finish()


def written_by_pyav(
    muxer: str, codec: str, channels: list[np.ndarray], sample_rate: int, **options: str
) -> bytes:
    """A whole file written by PyAV, for containers and layouts voxserve never writes."""
    layout = "mono" if len(channels) == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=sample_rate, options=options)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.stack(channels), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def rms_dbfs(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(samples, dtype=np.float64))))


def word_error_rate(reference_text: str, heard: str) -> float:
    expected, got = (re.findall(r"[a-z']+", text.lower()) for text in (reference_text, heard))
    row = list(range(len(got) + 1))  # edit distances from the empty prefix of `expected`
    for i, word in enumerate(expected, 1):
        diagonal, row[0] = row[0], i
        for j, other in enumerate(got, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (word != other))
    return row[-1] / len(expected)


def rejection(source: bytes, limits: ReferenceLimits = DEFAULTS) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        prepare_reference(source, limits)
    assert caught.value.param == "audio_sample"
    assert caught.value.status_code == 400
    return caught.value


def assert_levelled(prepared: ReferenceAudio, target_dbfs: float = TARGET_DBFS) -> None:
    assert prepared.samples.dtype == np.float32 and prepared.samples.ndim == 1
    assert rms_dbfs(prepared.samples) == pytest.approx(target_dbfs, abs=1.0)
    assert np.max(np.abs(prepared.samples)) <= 1.0


# --- formats, trimming, levels ----------------------------------------------------------------


def test_trims_silence_and_noise_but_keeps_all_speech(speech: Speech) -> None:
    prepared = prepare_reference(encoded("wav", speech.padded, speech.rate))

    assert prepared.sample_rate == 24000
    # What is kept is the speech and the margins, none of the 3 s of padding.
    assert prepared.duration == pytest.approx(speech.kept_seconds, abs=0.1)
    assert_levelled(prepared)


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "opus", "aac"])
def test_every_format_voxserve_writes_is_read_back(speech: Speech, fmt: str) -> None:
    prepared = prepare_reference(encoded(fmt, speech.padded, speech.rate))

    assert prepared.sample_rate == 24000
    assert prepared.duration == pytest.approx(speech.kept_seconds, abs=0.1)
    assert_levelled(prepared)


@pytest.mark.parametrize(
    ("muxer", "codec", "options"),
    [
        ("ipod", "aac", {}),  # .m4a, as phones record
        ("mp4", "aac", {}),
        ("ogg", "vorbis", {"strict": "experimental"}),  # FFmpeg's own encoder: stereo only
    ],
)
def test_m4a_and_ogg_vorbis_uploads(speech: Speech, muxer: str, codec: str, options) -> None:
    data = written_by_pyav(muxer, codec, [speech.padded, speech.padded], speech.rate, **options)

    prepared = prepare_reference(data)

    assert prepared.duration == pytest.approx(speech.kept_seconds, abs=0.1)
    assert_levelled(prepared)


def test_reads_files_by_path(speech: Speech, tmp_path) -> None:
    path = tmp_path / "reference.flac"
    path.write_bytes(encoded("flac", speech.padded, speech.rate))

    for source in (path, str(path)):
        assert prepare_reference(source).duration == pytest.approx(speech.kept_seconds, abs=0.1)


def test_a_missing_file_is_not_reported_as_bad_audio(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        prepare_reference(tmp_path / "missing.wav")


def test_stereo_is_mixed_to_mono(speech: Speech) -> None:
    mono = prepare_reference(encoded("wav", speech.padded, speech.rate))
    # Speech on the left only: the mix is the same speech at half the level, which the
    # normalization then brings back.
    left_only = written_by_pyav(
        "wav", "pcm_s16le", [speech.padded, np.zeros_like(speech.padded)], speech.rate
    )

    mixed = prepare_reference(left_only)

    assert mixed.samples.ndim == 1
    assert len(mixed.samples) == len(mono.samples)
    assert np.corrcoef(mixed.samples, mono.samples)[0, 1] > 0.999
    assert_levelled(mixed)


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_resamples_to_the_limits_rate(speech: Speech, rate: int) -> None:
    upload = encoded("wav", speech.padded, speech.rate)

    prepared = prepare_reference(upload, ReferenceLimits(sample_rate=rate))

    assert prepared.sample_rate == rate
    assert prepared.duration == pytest.approx(speech.kept_seconds, abs=0.1)


@pytest.mark.parametrize("gain", [0.02, 0.3, 1.0])
def test_quiet_and_loud_uploads_come_out_at_the_target_level(speech: Speech, gain: float) -> None:
    upload = encoded("wav", speech.padded * gain, speech.rate)

    assert_levelled(prepare_reference(upload))
    assert_levelled(prepare_reference(upload, ReferenceLimits(target_dbfs=-23)), -23)


def test_normalizing_never_lifts_a_peak_over_the_ceiling(speech: Speech) -> None:
    # Speech peaks ~17 dB above its RMS, so an RMS of -6 dBFS would need peaks at +11 dBFS.
    upload = encoded("wav", speech.padded, speech.rate)

    prepared = prepare_reference(upload, ReferenceLimits(target_dbfs=-6))

    assert np.max(np.abs(prepared.samples)) == pytest.approx(10 ** (-1 / 20), abs=1e-3)
    assert rms_dbfs(prepared.samples) < -12


def test_prepared_audio_is_read_only_and_converts_to_a_complete_wav(speech: Speech) -> None:
    prepared = prepare_reference(encoded("wav", speech.padded, speech.rate))
    with pytest.raises(ValueError):
        prepared.samples[0] = 0.5

    data = prepared.to_wav_bytes()

    with wave.open(io.BytesIO(data)) as wav:  # reads the real sizes from the header
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        assert wav.getframerate() == prepared.sample_rate
        assert wav.getnframes() == len(prepared.samples)
    decoded = decode_audio(data)
    assert np.max(np.abs(decoded.samples - prepared.samples)) < 1e-4


# --- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [b"not audio at all" * 64, b"RIFF\x00\x00\x00\x00WAVEjunk", bytes(range(256)) * 16, b""],
)
def test_corrupt_uploads_are_invalid_audio(junk: bytes) -> None:
    error = rejection(junk)

    assert error.code == "invalid_audio"
    assert error.message.startswith("could not read the audio: the file is damaged")
    assert error.message.endswith("upload WAV, MP3, FLAC, OGG or M4A")


def test_a_one_second_clip_is_too_short(speech: Speech) -> None:
    one_second = speech.samples[speech.rate // 2 : speech.rate // 2 + speech.rate]
    padded = np.concatenate([np.zeros(speech.rate), one_second, np.zeros(speech.rate)])

    error = rejection(encoded("wav", padded.astype(np.float32), speech.rate))

    assert error.code == "audio_too_short"
    # The second of speech and the margins are kept; the two seconds of silence are not.
    assert re.fullmatch(
        r"the clip has 1\.[0-3] s of speech after trimming silence; record at least 3 s",
        error.message,
    ), error.message


def test_a_forty_second_clip_is_too_long(speech: Speech) -> None:
    repeats = int(np.ceil(40 / speech.seconds))

    error = rejection(encoded("wav", np.tile(speech.samples, repeats), speech.rate))

    assert error.code == "audio_too_long"
    assert "trim it to at most 30 s" in error.message
    assert re.search(r"has 4\d\.\d s of speech", error.message), error.message


def test_an_absurdly_long_clip_is_refused_before_decoding(speech: Speech, monkeypatch) -> None:
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a clip that the packet timestamps already refuse")

    monkeypatch.setattr(reference, "decode_audio", no_decoding)
    limits = ReferenceLimits(min_seconds=1, max_seconds=3)  # the cap is 30 s: a small upload
    upload = encoded("wav", np.tile(speech.samples, 6), speech.rate)  # ~34 s, streamed header

    error = rejection(upload, limits)

    assert error.code == "audio_too_long"
    assert error.message == "the clip is over 30 s long; trim it to at most 3 s of clear speech"


@pytest.mark.parametrize("level_dbfs", [None, -80.0])
def test_silence_is_refused(level_dbfs: float | None) -> None:
    rate = 24000
    if level_dbfs is None:
        samples = np.zeros(5 * rate, dtype=np.float32)
    else:  # hiss from a muted or unplugged microphone
        samples = np.random.default_rng(1).normal(0, 10 ** (level_dbfs / 20), 5 * rate)

    error = rejection(encoded("wav", samples.astype(np.float32), rate))

    assert error.code == "audio_silent"
    assert error.message.startswith("the clip is silent")
    assert "check the microphone" in error.message


@pytest.mark.parametrize("fmt", ["wav", "mp3", "aac", "opus"])
def test_heavily_clipped_recordings_are_refused(speech: Speech, fmt: str) -> None:
    too_hot = np.clip(speech.padded * 16, -1.0, 1.0)

    error = rejection(encoded(fmt, too_hot, speech.rate))

    assert error.code == "audio_clipped"
    assert error.message.startswith("the recording is clipped (distorted): ")
    assert "record again at a lower input level" in error.message


@pytest.mark.parametrize("fmt", ["wav", "mp3", "aac", "opus"])
def test_loud_but_clean_recordings_are_not_clipped(speech: Speech, fmt: str) -> None:
    peak_at_full_scale = speech.padded / np.max(np.abs(speech.padded))

    prepared = prepare_reference(encoded(fmt, peak_at_full_scale, speech.rate))

    assert_levelled(prepared)


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError):
        ReferenceLimits(min_seconds=10, max_seconds=5)
    with pytest.raises(ValueError):
        ReferenceLimits(target_dbfs=3)


# --- transcription ----------------------------------------------------------------------------


def test_the_transcriber_loads_lazily_and_once(monkeypatch) -> None:
    loads: list[int] = []

    def slow_load(self):
        loads.append(1)
        time.sleep(0.05)
        return object()

    monkeypatch.setattr(Transcriber, "_load_model", slow_load)
    transcriber = Transcriber()
    assert not transcriber.loaded

    threads = [threading.Thread(target=transcriber.load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert transcriber.loaded and len(loads) == 1


def test_transcribes_the_spoken_words(speech: Speech, transcriber: Transcriber) -> None:
    prepared = prepare_reference(encoded("mp3", speech.padded, speech.rate))

    heard = transcriber.transcribe(prepared)

    assert heard == heard.strip()
    assert word_error_rate(SENTENCE, heard) <= 0.1, heard


def test_a_clip_without_speech_has_no_transcript(transcriber: Transcriber) -> None:
    silent = ReferenceAudio(samples=np.zeros(3 * 24000, dtype=np.float32), sample_rate=24000)

    with pytest.raises(InvalidRequestError) as caught:
        transcriber.transcribe(silent)

    assert (caught.value.code, caught.value.param) == ("no_speech", "audio_sample")
    assert "clear speech" in caught.value.message and "transcript" in caught.value.message


def test_a_missing_stt_extra_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # makes the import fail
    clip = ReferenceAudio(samples=np.zeros(24000, dtype=np.float32), sample_rate=24000)

    with pytest.raises(EngineUnavailableError) as caught:
        Transcriber().transcribe(clip)

    assert caught.value.code == "stt_not_installed"
    assert "pip install 'voxserve[stt]'" in caught.value.message


def test_a_missing_model_directory_is_unavailable_not_downloaded(tmp_path) -> None:
    with pytest.raises(EngineUnavailableError) as caught:
        Transcriber(model_path=str(tmp_path / "nowhere")).load()

    assert caught.value.code == "stt_model_missing"
