from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest

from voxserve.audio import AUDIO_FORMATS, create_encoder, decode_audio, decode_pcm16
from voxserve.audio.encode import _CONTAINER_FORMATS

from .signals import dominant_frequency, rms, sine

SAMPLE_RATES = [16000, 22050, 24000, 44100, 48000]

# ADTS and header-less streamed mp3 can't carry the encoder delay, so decoders also return the
# priming samples (aac 1024, mp3 ~1105) plus the zero padding of the last frame.
EXTRA_SECONDS_ALLOWED = {"mp3": 0.15, "aac": 0.15}
EXACT_TOLERANCE_SECONDS = 0.005


def encode_in_chunks(fmt: str, samples: np.ndarray, sample_rate: int) -> list[bytes]:
    """Encode 0.1 s at a time; the last element is what finish() returned."""
    encoder = create_encoder(fmt, sample_rate)
    chunk = sample_rate // 10
    outputs = [encoder.encode(samples[i : i + chunk]) for i in range(0, len(samples), chunk)]
    return [*outputs, encoder.finish()]


def decode(fmt: str, data: bytes, sample_rate: int) -> tuple[np.ndarray, int]:
    chunk = decode_pcm16(data, sample_rate) if fmt == "pcm" else decode_audio(data)
    return chunk.samples, chunk.sample_rate


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
@pytest.mark.parametrize("fmt", list(AUDIO_FORMATS))
def test_round_trip_keeps_the_signal(fmt: str, sample_rate: int) -> None:
    tone = sine(440, 2.0, sample_rate)
    data = b"".join(encode_in_chunks(fmt, tone, sample_rate))

    decoded, decoded_rate = decode(fmt, data, sample_rate)

    # Ogg Opus always decodes at 48 kHz, whatever rate it was encoded at.
    assert decoded_rate == (48000 if fmt == "opus" else sample_rate)
    extra_seconds = len(decoded) / decoded_rate - 2.0
    assert -EXACT_TOLERANCE_SECONDS <= extra_seconds
    assert extra_seconds <= EXTRA_SECONDS_ALLOWED.get(fmt, EXACT_TOLERANCE_SECONDS)
    assert dominant_frequency(decoded, decoded_rate) == pytest.approx(440, abs=2)
    middle = decoded[len(decoded) // 4 : -len(decoded) // 4]
    assert rms(middle) == pytest.approx(rms(tone), rel=0.1)


@pytest.mark.parametrize("fmt", list(AUDIO_FORMATS))
def test_output_streams_while_audio_arrives(fmt: str) -> None:
    sample_rate = 22050
    outputs = encode_in_chunks(fmt, sine(440, 10.0, sample_rate), sample_rate)

    chunks_with_bytes = [index for index, output in enumerate(outputs[:-1]) if output]
    # Never more than 1 s of input (10 chunks) without any output, from the start to the end.
    assert chunks_with_bytes[0] < 10
    assert max(np.diff([*chunks_with_bytes, len(outputs) - 1])) <= 10


@pytest.mark.parametrize("sample_rate", [22050, 24000])
def test_mp3_outputs_joined_end_to_end_decode_as_one_stream(sample_rate: int) -> None:
    first = b"".join(encode_in_chunks("mp3", sine(440, 1.0, sample_rate), sample_rate))
    second = b"".join(encode_in_chunks("mp3", sine(660, 0.5, sample_rate), sample_rate))
    for output in (first, second):
        # An MPEG frame sync (11 set bits) at the first byte: no ID3v2 tag before the audio, and
        # the first frame is audio, not a Xing/Info frame claiming one output's length.
        assert output[0] == 0xFF and output[1] & 0xE0 == 0xE0
        assert b"Xing" not in output[:200] and b"Info" not in output[:200]
    with av.open(io.BytesIO(first + second)) as container:
        frames = list(container.decode(audio=0))
    seconds = sum(frame.samples for frame in frames) / sample_rate
    assert 1.5 <= seconds <= 1.5 + 2 * EXTRA_SECONDS_ALLOWED["mp3"]
    assert {frame.sample_rate for frame in frames} == {sample_rate}


@pytest.mark.parametrize("fmt", list(AUDIO_FORMATS))
def test_encoder_describes_its_output(fmt: str) -> None:
    encoder = create_encoder(fmt, 24000)

    assert (encoder.format, encoder.content_type, encoder.sample_rate) == (
        fmt,
        AUDIO_FORMATS[fmt],
        24000,
    )


@pytest.mark.parametrize("fmt", list(AUDIO_FORMATS))
def test_finished_encoder_refuses_more_audio(fmt: str) -> None:
    encoder = create_encoder(fmt, 22050)
    encoder.finish()

    with pytest.raises(RuntimeError, match="already finished"):
        encoder.encode(sine(440, 0.1, 22050))


def test_unknown_format_names_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="unsupported audio format 'ogg'.*mp3.*opus"):
        create_encoder("ogg", 22050)


def test_content_types() -> None:
    assert AUDIO_FORMATS == {
        "pcm": "audio/pcm",
        "wav": "audio/wav",
        "mp3": "audio/mpeg",
        "opus": "audio/ogg; codecs=opus",
        "aac": "audio/aac",
        "flac": "audio/flac",
    }


def test_pcm_clips_scales_and_rounds() -> None:
    samples = np.array(
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.4 / 32767, 1.6 / 32767, -1.6 / 32767],
        dtype=np.float32,
    )
    encoder = create_encoder("pcm", 16000)

    data = encoder.encode(samples) + encoder.finish()

    # 0.5 * 32767 = 16383.5 rounds to the even neighbour.
    expected = [0, 32767, -32767, 32767, -32767, 16384, -16384, 1, 2, -2]
    assert data == struct.pack(f"<{len(expected)}h", *expected)


@pytest.mark.parametrize("spec", _CONTAINER_FORMATS.values(), ids=lambda spec: spec.name)
def test_codecs_accept_a_short_final_frame(spec) -> None:
    # ContainerEncoder.finish() relies on this to send the remainder without padding.
    codec = av.codec.Codec(spec.codec, "w")

    assert codec.capabilities & av.codec.Capabilities.small_last_frame


@pytest.mark.parametrize("fmt", list(AUDIO_FORMATS))
@pytest.mark.parametrize("sample_rate", [8001, 9000, 23000, 47999])
def test_any_requested_rate_is_encoded(fmt: str, sample_rate: int) -> None:
    # A request may ask for any rate from 8 to 48 kHz; libmp3lame and aac open only at their own
    # rates (8001 Hz was a 500), so the container resamples to the next one they take.
    data = b"".join(encode_in_chunks(fmt, sine(440, 0.5, sample_rate), sample_rate))
    decoded, decoded_rate = decode(fmt, data, sample_rate)
    assert dominant_frequency(decoded, decoded_rate) == pytest.approx(440, abs=4)
