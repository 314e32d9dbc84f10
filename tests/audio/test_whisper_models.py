"""Whisper models from PyPI by name: base joined from its two halves once, checked, and never
left half-written; its word timings on real Piper speech."""

from __future__ import annotations

import shutil
import statistics

import numpy as np
import pytest

from voxserve.audio import whisper_models
from voxserve.audio.frames import AudioChunk
from voxserve.audio.transcribe import Transcriber
from voxserve.audio.whisper_models import bundled_model_path, cache_directory
from voxserve.engines.base import SynthesisOptions
from voxserve.errors import EngineUnavailableError, InvalidRequestError

SENTENCE = "The weather is lovely today, and the train leaves from the old station."


@pytest.fixture(scope="module")
def base() -> Transcriber:
    transcriber = Transcriber("base")
    transcriber.load()
    return transcriber


@pytest.fixture(scope="module")
def joe_says(piper_synthesizer) -> tuple[AudioChunk, list]:
    """SENTENCE by Piper's joe, one clip, with Piper's own word timings (the reference)."""
    engine = piper_synthesizer.registry.get("piper")
    chunks = list(engine.synthesize(SENTENCE, SynthesisOptions(voice="joe")))
    words, offset = [], 0.0
    for chunk in chunks:
        words += [word.shifted(offset) for word in chunk.words]
        offset += chunk.duration
    samples = np.concatenate([chunk.samples for chunk in chunks])
    return AudioChunk(samples, chunks[0].sample_rate), words


def test_base_is_joined_once_into_the_cache_with_the_halves_size(base):
    path = bundled_model_path("base")
    assert path == cache_directory() / "whisper-base"
    halves = sum(
        (whisper_models._package_data(package) / f"model.bin.part{n}").stat().st_size
        for n, package in enumerate(whisper_models._BASE_PACKAGES, 1)
    )
    model = path / "model.bin"
    assert model.stat().st_size == halves
    written = model.stat().st_mtime_ns
    assert bundled_model_path("base") == path and model.stat().st_mtime_ns == written
    assert not [name for name in path.iterdir() if name.name.startswith(".")]  # no leftovers


def test_a_join_that_fails_leaves_no_model_that_looks_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXSERVE_CACHE", str(tmp_path))
    real_copy = shutil.copyfileobj

    def copy_then_fail(source, target, length=1 << 20):
        if source.name.endswith("model.bin.part2"):  # the disk fills halfway through the model
            raise OSError(28, "No space left on device")
        real_copy(source, target, length)

    monkeypatch.setattr(whisper_models.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(OSError, match="No space"):
        bundled_model_path("base")
    target = tmp_path / "whisper-base"
    assert not (target / "model.bin").exists()
    assert sorted(path.name for path in target.iterdir()) == sorted(whisper_models._BASE_FILES)


def test_an_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match="tiny.en, base"):
        bundled_model_path("large")


def test_base_hears_piper_and_times_its_words_near_pipers_own(base, joe_says):
    clip, reference = joe_says
    assert "the old station" in base.transcribe(clip).lower()
    heard = base.timed_words(clip, "en")
    assert [word.text.strip(",.").lower() for word in heard] == [
        word.text.strip(",.").lower() for word in reference
    ]
    assert all(a.start <= b.start for a, b in zip(heard, heard[1:], strict=False))
    assert all(0 <= word.start < word.end <= clip.duration + 0.05 for word in heard)
    offsets = [abs(a.start - b.start) for a, b in zip(heard, reference, strict=True)]
    assert statistics.median(offsets) < 0.15, offsets  # Whisper's alignment is coarse: ~50 ms


def test_an_english_only_model_refuses_another_language(joe_says):
    with pytest.raises(InvalidRequestError, match="English only") as raised:
        Transcriber("tiny.en").timed_words(joe_says[0], "de")
    assert raised.value.param == "language"


def test_without_the_halves_installed_base_names_its_extra(monkeypatch):
    monkeypatch.setattr(whisper_models, "_BASE_PACKAGES", ("no_such_package_part1", "x"))
    with pytest.raises(EngineUnavailableError, match=r"voxserve\[whisper-base\]"):
        bundled_model_path("base")
