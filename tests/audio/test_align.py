"""Forced alignment of known text (voxserve.audio.align) on real speech: the embedded Piper voice,
whose own word timings (from its phoneme durations) are the reference."""

from __future__ import annotations

import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from voxserve.audio import align
from voxserve.audio.align import align_words
from voxserve.audio.frames import WordTiming
from voxserve.engines.base import SynthesisOptions
from voxserve.errors import EngineError, EngineUnavailableError, InvalidRequestError
from voxserve.text import normalize_for

RATE = 22050  # Piper joe's
TOLERANCE = 0.15
"""How far (seconds) an aligned start may sit from Piper's, in the median: the two disagree by
~50 ms, the aligner hearing each word a little before the phonemes Piper was told to say."""
SENTENCES = [
    "The weather is lovely today, and the train leaves at 7:45 from platform 3.",
    "Dr. Smith will see you on Tuesday, after the meeting.",
    "The invoice came to $1,250, due by March 15th.",
]


@dataclass(frozen=True)
class Speech:
    text: str
    """What Piper was given: normalized, as the synthesizer gives it to an engine."""
    samples: np.ndarray
    words: list[WordTiming]
    """Piper's own word timings, from the start of ``samples``."""


@pytest.fixture(scope="session")
def piper(piper_synthesizer):
    engine = piper_synthesizer.registry.get("piper")
    engine.load()
    return engine


def speak(piper, text: str) -> Speech:
    """``text`` normalized and spoken by joe; Piper times words from the start of each chunk."""
    normalized = normalize_for(text, "en")
    chunks = list(piper.synthesize(normalized, SynthesisOptions(voice="joe")))
    words, offset = [], 0.0
    for chunk in chunks:
        words += [word.shifted(offset) for word in chunk.words]
        offset += chunk.duration
    return Speech(normalized, np.concatenate([chunk.samples for chunk in chunks]), words)


@pytest.fixture(scope="session")
def speeches(piper) -> list[Speech]:
    return [speak(piper, sentence) for sentence in SENTENCES]


def aligned(speech: Speech) -> list[WordTiming]:
    return align_words(speech.samples, RATE, speech.text)


def start_distances(aligned: list[WordTiming], reference: list[WordTiming]) -> list[float]:
    return [abs(ours.start - theirs.start) for ours, theirs in zip(aligned, reference, strict=True)]


def test_words_come_in_order_as_written_each_near_where_piper_says_it(speeches):
    distances = []
    for speech in speeches:
        words = aligned(speech)
        assert [word.text for word in words] == [word.text for word in speech.words]
        bounds = [time for word in words for time in (word.start, word.end)]
        assert bounds == sorted(bounds)
        assert all(word.end > word.start for word in words)
        assert 0 <= bounds[0] and bounds[-1] <= len(speech.samples) / RATE + 0.01
        distances += start_distances(words, speech.words)
    assert statistics.median(distances) < TOLERANCE
    assert sum(distance < 2 * TOLERANCE for distance in distances) >= 0.9 * len(distances)


def test_silence_before_the_speech_shifts_every_start_by_its_length(speeches):
    speech = speeches[0]
    padding = 0.5
    padded = np.concatenate([np.zeros(round(padding * RATE), dtype=np.float32), speech.samples])
    plain = aligned(speech)
    shifted = align_words(padded, RATE, speech.text)
    assert [word.text for word in shifted] == [word.text for word in plain]
    shifts = [later.start - earlier.start for earlier, later in zip(plain, shifted, strict=True)]
    assert statistics.median(shifts) == pytest.approx(padding, abs=0.02)


def test_a_written_number_is_timed_as_the_words_it_is_said_as(piper):
    speech = speak(piper, "The train leaves at 7:45.")  # said "... at seven forty-five."
    words = align_words(speech.samples, RATE, "The train leaves at 7:45.")
    assert [word.text for word in words] == ["The", "train", "leaves", "at", "7:45."]
    seven, forty_five = speech.words[-2:]
    assert [word.text for word in speech.words[-2:]] == ["seven", "forty-five."]
    assert abs(words[-1].start - seven.start) < TOLERANCE
    assert abs(words[-1].end - forty_five.end) < 2 * TOLERANCE


def test_a_word_the_dictionary_lacks_is_said_by_known_pieces_or_left_out(piper):
    # "voxserve" is not in CMUdict, "vox" and "serve" are; nothing it knows spells "zyphra".
    speech = speak(piper, "Zyphra makes voxserve speak in many voices.")
    words = aligned(speech)
    assert [word.text for word in words] == [word.text for word in speech.words[1:]]
    assert statistics.median(start_distances(words, speech.words[1:])) < TOLERANCE


def test_alignments_in_threads_and_in_any_order_are_those_made_one_at_a_time(speeches):
    # Each decoder goes on from whatever it aligned last: that must not change what it finds.
    work = speeches * 2
    alone = [aligned(speech) for speech in work]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(aligned, work))
    assert together == alone
    assert [aligned(speech) for speech in reversed(work)] == alone[::-1]


def test_text_without_words_or_empty_audio_is_refused(speeches):
    for text in ("", "  ", "-- ... !"):
        with pytest.raises(InvalidRequestError, match="the text has no words"):
            align_words(speeches[0].samples, RATE, text)
    with pytest.raises(InvalidRequestError, match="the audio is empty"):
        align_words(np.zeros(0, dtype=np.float32), RATE, "Hello.")


def test_speech_too_short_for_the_text_is_an_alignment_error(piper):
    speech = speak(piper, "Hello.")
    with pytest.raises(EngineError, match="could not be aligned") as raised:
        align_words(speech.samples, RATE, " ".join(SENTENCES))
    assert raised.value.code == "alignment_failed"


def test_without_the_align_extra_the_error_names_it(speeches, monkeypatch):
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # as if it were not installed
    monkeypatch.setattr(align, "_idle_decoders", [])
    with pytest.raises(EngineUnavailableError, match=r"voxserve\[align\]") as raised:
        aligned(speeches[0])
    assert raised.value.code == "align_not_installed"
