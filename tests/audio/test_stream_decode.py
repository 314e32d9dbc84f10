"""MP3 decoded as it arrives, piece by piece, as a provider streams it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.audio.signals import dominant_frequency, sine
from voxserve.audio import create_encoder, decode_audio
from voxserve.audio.stream_decode import StreamDecoder


@pytest.fixture(scope="module")
def mp3() -> bytes:
    encoder = create_encoder("mp3", 24000)
    return encoder.encode(sine(440, 2.0, 24000)) + encoder.finish()


def test_pieces_decode_as_they_come_to_what_the_whole_file_holds(mp3):
    decoder = StreamDecoder("mp3float", 24000)
    pieces = [decoder.feed(mp3[start : start + 777]) for start in range(0, len(mp3), 777)]
    assert sum(len(piece) for piece in pieces[:-1]) > 0.8 * 24000  # audio before the end
    streamed = np.concatenate([*pieces, decoder.finish()])
    whole = decode_audio(mp3).samples
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
    assert dominant_frequency(streamed, 24000) == pytest.approx(440, abs=5)


def test_a_frame_split_between_pieces_waits_for_its_rest(mp3):
    decoder = StreamDecoder("mp3float", 16000)  # and resampled to the rate asked for
    assert len(decoder.feed(mp3[:10])) == 0
    rest = np.concatenate([decoder.feed(mp3[10:]), decoder.finish()])
    assert len(rest) == pytest.approx(2.0 * 16000, rel=0.05)


def test_bytes_that_are_no_mp3_are_refused():
    decoder = StreamDecoder("mp3float", 24000)
    with pytest.raises(ValueError, match="could not decode audio"):
        decoder.feed(b"\xff\xfb" + bytes(range(256)) * 20)
        decoder.finish()
