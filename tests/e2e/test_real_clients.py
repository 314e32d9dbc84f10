"""Voice-agent frameworks' own OpenAI TTS clients against the real server, unchanged.

pipecat's ``OpenAITTSService`` and LiveKit's ``livekit.plugins.openai.TTS`` point at
``<server>/v1`` and play what comes back at 24 kHz, OpenAI's rate, without reading the content
type. Each client's audio must last as long as the same text does at the engine's own rate, and
the bundled Whisper must hear the words in it.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from livekit.plugins import openai as livekit_openai
from pipecat.frames.frames import ErrorFrame, TTSAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.task import PipelineParams
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.tests.utils import run_test

from tests.e2e.test_intelligibility import word_error_rate
from voxserve.audio import StreamResampler, decode_audio
from voxserve.audio.transcribe import WHISPER_SAMPLE_RATE

TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "Please remember to bring your umbrella tomorrow morning."
)
CLIENT_RATE = 24000  # what both clients assume OpenAI's pcm to be


@pytest.fixture(scope="module")
def expected_seconds(server_url: str) -> float:
    """How long TEXT lasts, from a wav at the engine's own rate (the header states the rate)."""
    response = httpx.post(
        f"{server_url}/v1/audio/speech",
        json={"input": TEXT, "voice": "alloy", "response_format": "wav", "stream": False},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return decode_audio(response.content).duration


def check_audio(samples: np.ndarray, expected_seconds: float, transcriber) -> None:
    """Right length at the client's rate, and intelligible."""
    seconds = len(samples) / CLIENT_RATE
    # Tight enough to catch 22,050 Hz audio played at 24 kHz (8% short); loose enough for
    # Piper's sampled phoneme durations and an mp3 decoder's priming samples.
    assert seconds == pytest.approx(expected_seconds, rel=0.03, abs=0.1)
    at_16k = StreamResampler(CLIENT_RATE, WHISPER_SAMPLE_RATE).process(samples, last=True)
    heard = transcriber.transcribe_samples(at_16k, beam_size=1)
    assert word_error_rate(TEXT, heard) <= 0.1, heard


def int16_to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


async def test_pipecat_openai_tts_service(server_url, expected_seconds, piper_synthesizer):
    service = OpenAITTSService(
        api_key="not-needed",
        base_url=f"{server_url}/v1",
        settings=OpenAITTSService.Settings(voice="alloy", model="gpt-4o-mini-tts"),
    )
    # pipecat's own test harness: a real pipeline (source -> service -> sink), a TTSSpeakFrame
    # in, then an EndFrame that waits for the service to finish.
    down, _ = await run_test(
        service,
        frames_to_send=[TTSSpeakFrame(TEXT)],
        pipeline_params=PipelineParams(audio_out_sample_rate=CLIENT_RATE),
        start_timeout=30,
    )
    errors = [frame.error for frame in down if isinstance(frame, ErrorFrame)]
    assert errors == []
    audio = [frame for frame in down if isinstance(frame, TTSAudioRawFrame)]
    assert {(frame.sample_rate, frame.num_channels) for frame in audio} == {(CLIENT_RATE, 1)}
    samples = int16_to_float(b"".join(frame.audio for frame in audio))
    check_audio(samples, expected_seconds, piper_synthesizer.resolver.transcriber)


@pytest.mark.parametrize(
    ("model", "response_format"),
    [
        # The plugin's defaults: mp3 in OpenAI's SSE events (it asks SSE of gpt-4o-mini-tts).
        ("gpt-4o-mini-tts", None),
        # tts-1 gets plain audio; pcm is read as raw 24 kHz.
        ("tts-1", "pcm"),
    ],
)
async def test_livekit_openai_tts(
    server_url, expected_seconds, piper_synthesizer, model, response_format
):
    options = {"response_format": response_format} if response_format else {}
    tts = livekit_openai.TTS(
        base_url=f"{server_url}/v1", api_key="not-needed", model=model, voice="alloy", **options
    )
    try:
        async with tts.synthesize(TEXT) as stream:
            frames = [event.frame async for event in stream]
    finally:
        await tts.aclose()
    assert {(frame.sample_rate, frame.num_channels) for frame in frames} == {(CLIENT_RATE, 1)}
    samples = int16_to_float(b"".join(bytes(frame.data) for frame in frames))
    check_audio(samples, expected_seconds, piper_synthesizer.resolver.transcriber)
