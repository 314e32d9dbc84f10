"""A new pitch and timbre for any voice's audio, so one neural voice can speak as several.

Praat's "Change gender" does the work (through parselmouth, imported on first use): PSOLA moves
the pitch to a new median and widens or narrows its range, and resampling around it shifts the
formants (the timbre: shorter or longer vocal tract) while keeping the duration. It costs about
10 ms of CPU per second of audio, several times less than synthesizing that second with Piper.

Parselmouth holds the GIL while Praat works, so calls from several threads are safe but run one
at a time.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import parselmouth

PITCH_FLOOR = 60.0
"""Hz; low enough for a deep male voice. Praat's analysis window is 3 periods of this."""
PITCH_CEILING = 600.0
"""Hz; high enough for a raised female or child voice."""


def median_pitch(samples: np.ndarray, sample_rate: int) -> float:
    """Median fundamental frequency of the voiced frames, in Hz; 0.0 when none is voiced."""
    analysed = _analyse(samples, sample_rate)
    if analysed is None:
        return 0.0
    _, _, voiced = analysed
    return float(np.median(voiced)) if voiced.size else 0.0


def change_voice(
    samples: np.ndarray,
    sample_rate: int,
    *,
    pitch_median: float,
    formant_shift: float = 1.0,
    pitch_range: float = 1.0,
    reference_median: float | None = None,
) -> np.ndarray:
    """Speak ``samples`` at another pitch and with another timbre; the duration stays.

    pitch_median: the median F0 (Hz) of the result.
    formant_shift: formant frequencies times this (> 1: shorter vocal tract, more feminine).
    pitch_range: the pitch's spread around its median times this (0: monotone).
    reference_median: the usual median F0 of the voice that spoke ``samples``. When given, the
        pitch is scaled by ``pitch_median / reference_median`` instead of every call being pinned
        to ``pitch_median``, so that a question still rises above a statement when a voice is
        transformed sentence by sentence.

    Returns float32 samples of the same length; input too short to analyse, or with nothing
    voiced, comes back unchanged.
    """
    if pitch_median <= 0 or formant_shift <= 0 or pitch_range < 0:
        raise ValueError(
            "pitch_median and formant_shift must be positive and pitch_range not negative; got "
            f"{pitch_median}, {formant_shift} and {pitch_range}"
        )
    if reference_median is not None and reference_median <= 0:
        raise ValueError(f"reference_median must be positive, got {reference_median}")
    samples = np.asarray(samples, dtype=np.float32)
    analysed = _analyse(samples, sample_rate)
    if analysed is None or analysed[2].size == 0:
        return samples
    sound, pitch, voiced = analysed
    target = pitch_median
    if reference_median is not None:
        target = float(np.median(voiced)) * pitch_median / reference_median

    from parselmouth.praat import call

    changed = call([sound, pitch], "Change gender", formant_shift, target, pitch_range, 1.0)
    result = changed.values[0]
    # Praat's resampling can leave a sample more or less; callers count on the exact length.
    if len(result) >= len(samples):
        result = result[: len(samples)]
    else:
        result = np.pad(result, (0, len(samples) - len(result)))
    # PSOLA can overshoot the input's peaks a little; hard clipping there is inaudible.
    return np.clip(result, -1.0, 1.0).astype(np.float32)


def _analyse(
    samples: np.ndarray, sample_rate: int
) -> tuple[parselmouth.Sound, parselmouth.Pitch, np.ndarray] | None:
    """The sound, its pitch track and the voiced frames' F0; None when too short to analyse."""
    if len(samples) <= math.ceil(3 * sample_rate / PITCH_FLOOR):
        return None
    import parselmouth

    sound = parselmouth.Sound(np.asarray(samples, dtype=np.float64), sampling_frequency=sample_rate)
    pitch = sound.to_pitch(pitch_floor=PITCH_FLOOR, pitch_ceiling=PITCH_CEILING)
    frequencies = pitch.selected_array["frequency"]
    return sound, pitch, frequencies[frequencies > 0]
