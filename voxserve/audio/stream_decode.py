"""Compressed audio decoded as it arrives (a provider streaming MP3): bytes in, samples out.

``decode.py`` reads a whole file; a network engine gets its audio in pieces and should hand on
each piece's samples at once, so that first audio does not wait for the whole utterance. FFmpeg's
parser finds the codec's frames across the pieces (a frame split between two of them waits for
the rest), its decoder turns them into float32 mono at the rate asked for.
"""

from __future__ import annotations

import av
import numpy as np


class StreamDecoder:
    """One compressed stream (``codec``: an FFmpeg decoder name: "mp3float",
    the float decoder FFmpeg picks for a file, rather than the 16-bit "mp3"), fed in pieces."""

    def __init__(self, codec: str, sample_rate: int):
        self.sample_rate = sample_rate
        self._codec = av.CodecContext.create(codec, "r")
        # Planar float keeps channels apart, so a mono mix-down is a plain average (decode.py).
        self._resampler = av.AudioResampler(format="fltp", rate=sample_rate)

    def feed(self, data: bytes) -> np.ndarray:
        """The samples of every frame ``data`` completes (none while a frame is still partial)."""
        return _mono(self._planes(self._codec.parse(data)))

    def finish(self) -> np.ndarray:
        """The samples still held: the parser's last frame, the decoder's and resampler's tail."""
        planes = self._planes(self._codec.parse(None))
        planes += self._planes([None])
        planes += self._resample(None)
        return _mono(planes)

    def _planes(self, packets: list[av.Packet | None]) -> list[np.ndarray]:
        """``None``: the decoder's flush."""
        planes: list[np.ndarray] = []
        try:
            for packet in packets:
                planes += self._resampled(self._codec.decode(packet))
        except av.FFmpegError as error:
            raise ValueError(f"could not decode audio: {error}") from error
        return planes

    def _resampled(self, frames: list[av.AudioFrame]) -> list[np.ndarray]:
        planes: list[np.ndarray] = []
        for frame in frames:
            planes += self._resample(frame)
        return planes

    def _resample(self, frame: av.AudioFrame | None) -> list[np.ndarray]:
        return [converted.to_ndarray() for converted in self._resampler.resample(frame)]


def _mono(planes: list[np.ndarray]) -> np.ndarray:
    if not planes:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(planes, axis=1).mean(axis=0, dtype=np.float32)
