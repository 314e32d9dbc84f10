"""Test signals and measurements shared by the audio tests."""

from __future__ import annotations

import numpy as np


def sine(frequency: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    """A float32 sine tone."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    """Frequency of the strongest FFT bin, in Hz."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * sample_rate / len(samples))


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A 16-bit mono WAV file of float samples."""
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()
