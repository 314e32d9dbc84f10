"""A music bed under speech: its level where no one speaks, ducked under speech, faded in and
out, looped, without clicks; bad music refused naming the field."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from voxserve.audio import create_encoder, fix_wav_header
from voxserve.audio.music_bed import BedMixer, MusicBed
from voxserve.errors import InvalidRequestError

RATE = 22050


def wav(samples: np.ndarray) -> bytes:
    encoder = create_encoder("wav", RATE)
    return fix_wav_header(encoder.encode(samples.astype(np.float32)) + encoder.finish())


def tone(seconds: float, frequency: float = 220.0, level: float = 0.5) -> np.ndarray:
    time = np.arange(round(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def rms_db(samples: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


@pytest.fixture
def music() -> bytes:
    return wav(tone(1.5))  # shorter than the speech: it must loop


def mixed_in_blocks(mixer: BedMixer, speech: np.ndarray, block: int = 1000) -> np.ndarray:
    return np.concatenate([mixer.mix(speech[i : i + block]) for i in range(0, len(speech), block)])


def test_the_bed_sits_at_its_level_and_dips_under_speech(music):
    bed = MusicBed(level_db=-20, duck_db=-12, fade_in=0.5, fade_out=1.0)
    speech = np.concatenate([np.zeros(3 * RATE), tone(3, 1000, 0.3), np.zeros(3 * RATE)])
    mixed = mixed_in_blocks(BedMixer(music, bed, RATE), speech)
    assert len(mixed) == len(speech)
    music_alone = mixed - speech
    assert rms_db(music_alone[RATE : 3 * RATE]) == pytest.approx(-20, abs=0.5)  # before speech
    assert rms_db(music_alone[round(3.5 * RATE) : 6 * RATE]) == pytest.approx(-32, abs=1)  # ducked
    assert rms_db(music_alone[8 * RATE :]) == pytest.approx(-20, abs=0.5)  # released after
    assert rms_db(music_alone[: RATE // 10]) < -30  # fading in


def test_the_gain_moves_smoothly_and_the_tail_fades_out(music):
    bed = MusicBed(level_db=-20, duck_db=-20, fade_in=0, fade_out=2.0)
    mixer = BedMixer(music, bed, RATE)
    speech = np.concatenate([np.zeros(RATE), tone(1, 1000, 0.3), np.zeros(RATE)])
    music_alone = mixed_in_blocks(mixer, speech, block=777) - speech
    # No click: no step between samples larger than the music's own largest (a 220 Hz tone).
    own_step = np.max(np.abs(np.diff(tone(0.1) * 10 ** (-20 / 20) / np.sqrt(0.125))))
    assert np.max(np.abs(np.diff(music_alone))) <= own_step * 1.05
    tail = mixer.finish()
    assert len(tail) == 2 * RATE
    assert rms_db(tail[: RATE // 4]) > rms_db(tail[-RATE // 4 :]) + 20 and abs(tail[-1]) < 1e-3


@pytest.mark.parametrize(
    ("audio", "words"), [(b"not audio", "cannot be read"), (wav(np.zeros(RATE)), "silent")]
)
def test_bad_music_is_refused_naming_it(audio, words):
    with pytest.raises(InvalidRequestError, match=words) as refused:
        BedMixer(audio, MusicBed(), RATE)
    assert refused.value.param == "music"


def test_settings_out_of_range_are_refused():
    with pytest.raises(ValidationError, match="level_db"):
        MusicBed(level_db=6)
