"""The pieces of torchaudio that Chatterbox and its watermarker use, written with torch operations.

The project's torchaudio stand-in (``higgs.torchaudio_compat``) holds ``functional.resample``;
Chatterbox asks for more: ``transforms.Resample`` (S3Gen's reference clip to 16 and 24 kHz),
``compliance.kaldi.fbank`` (the CAM++ speaker encoder's features) and resemble-perth's
``transforms.Spectrogram``, ``InverseSpectrogram`` and ``TimeStretch`` (built, never called: its
stretch attack is commented out upstream). Each follows torchaudio's algorithm and defaults
(BSD-2-Clause) for the arguments these callers pass; other arguments are refused, not ignored.
``compat.install`` adds them to the stand-in when the real torchaudio does not import.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from voxserve.engines.higgs.torchaudio_compat import resample


class Resample(torch.nn.Module):
    """``torchaudio.transforms.Resample``: ``functional.resample`` as a module."""

    def __init__(
        self,
        orig_freq: int = 16000,
        new_freq: int = 16000,
        resampling_method: str = "sinc_interp_hann",
        lowpass_filter_width: int = 6,
        rolloff: float = 0.99,
        beta: float | None = None,
    ):
        super().__init__()
        self.orig_freq, self.new_freq = orig_freq, new_freq
        self.options = dict(
            lowpass_filter_width=lowpass_filter_width,
            rolloff=rolloff,
            resampling_method=resampling_method,
            beta=beta,
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return resample(waveform, self.orig_freq, self.new_freq, **self.options)


class Spectrogram(torch.nn.Module):
    """``torchaudio.transforms.Spectrogram``: a centred STFT, complex when ``power`` is None."""

    def __init__(
        self,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        pad: int = 0,
        window_fn: Callable[..., torch.Tensor] = torch.hann_window,
        power: float | None = 2.0,
        normalized: bool = False,
        center: bool = True,
        pad_mode: str = "reflect",
        onesided: bool = True,
    ):
        super().__init__()
        if normalized:
            raise NotImplementedError("voxserve's Spectrogram stand-in is not normalized")
        self.n_fft, self.pad, self.power = n_fft, pad, power
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.center, self.pad_mode, self.onesided = center, pad_mode, onesided
        self.register_buffer("window", window_fn(self.win_length))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.pad:
            waveform = torch.nn.functional.pad(waveform, (self.pad, self.pad))
        shape = waveform.shape
        spectrum = torch.stft(
            waveform.reshape(-1, shape[-1]),
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=self.center,
            pad_mode=self.pad_mode,
            onesided=self.onesided,
            return_complex=True,
        )
        spectrum = spectrum.reshape(*shape[:-1], *spectrum.shape[-2:])
        return spectrum if self.power is None else spectrum.abs().pow(self.power)


class InverseSpectrogram(torch.nn.Module):
    """``torchaudio.transforms.InverseSpectrogram``: the inverse of a complex ``Spectrogram``."""

    def __init__(
        self,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        pad: int = 0,
        window_fn: Callable[..., torch.Tensor] = torch.hann_window,
        normalized: bool = False,
        center: bool = True,
        pad_mode: str = "reflect",
        onesided: bool = True,
    ):
        super().__init__()
        if normalized:
            raise NotImplementedError("voxserve's InverseSpectrogram stand-in is not normalized")
        self.n_fft, self.pad = n_fft, pad
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.center, self.onesided = center, onesided
        self.register_buffer("window", window_fn(self.win_length))

    def forward(self, spectrogram: torch.Tensor, length: int | None = None) -> torch.Tensor:
        shape = spectrogram.shape
        waveform = torch.istft(
            spectrogram.reshape(-1, *shape[-2:]),
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=self.center,
            onesided=self.onesided,
            length=None if length is None else length + 2 * self.pad,
        )
        if self.pad:
            waveform = waveform[..., self.pad : -self.pad]
        return waveform.reshape(*shape[:-2], waveform.shape[-1])


class TimeStretch(torch.nn.Module):
    """``torchaudio.transforms.TimeStretch``, for construction only: resemble-perth builds one
    (its checkpoint holds the ``phase_advance`` buffer) and never calls it (its stretch attack
    is commented out)."""

    def __init__(self, hop_length: int | None = None, n_freq: int = 201, fixed_rate=None):
        super().__init__()
        hop_length = hop_length if hop_length is not None else n_freq - 1  # n_fft // 2
        self.register_buffer(
            "phase_advance", torch.linspace(0, math.pi * hop_length, n_freq)[..., None]
        )

    def forward(self, spectrogram: torch.Tensor, overriding_rate=None) -> torch.Tensor:
        raise NotImplementedError(
            "voxserve's torchaudio stand-in has no TimeStretch: install a torchaudio build that "
            "matches your torch"
        )


def fbank(
    waveform: torch.Tensor,
    num_mel_bins: int = 23,
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    sample_frequency: float = 16000.0,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    dither: float = 0.0,
    preemphasis_coefficient: float = 0.97,
    remove_dc_offset: bool = True,
    round_to_power_of_two: bool = True,
    use_power: bool = True,
    use_log_fbank: bool = True,
) -> torch.Tensor:
    """``torchaudio.compliance.kaldi.fbank`` (Kaldi's ``compute-fbank-feats``) with a Povey
    window, edges snipped and no energy term: frames x ``num_mel_bins`` log mel energies of the
    first channel of ``waveform`` (channels x samples)."""
    dtype, device = waveform.dtype, waveform.device
    epsilon = torch.tensor(torch.finfo(dtype).eps, dtype=dtype, device=device)
    signal = waveform[0]
    shift = int(sample_frequency * frame_shift * 0.001)
    size = int(sample_frequency * frame_length * 0.001)
    padded_size = 1 << (size - 1).bit_length() if round_to_power_of_two else size
    if len(signal) < size:
        return torch.empty(0, num_mel_bins, dtype=dtype, device=device)
    frames = signal.unfold(0, size, shift)  # 1 + (samples - size) // shift frames
    if dither:
        frames = frames + dither * torch.randn_like(frames)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis_coefficient:
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # the first sample repeated
        frames = frames - preemphasis_coefficient * previous
    window = torch.hann_window(size, periodic=False, dtype=dtype, device=device).pow(0.85)
    frames = torch.nn.functional.pad(frames * window, (0, padded_size - size))
    spectrum = torch.fft.rfft(frames).abs()
    if use_power:
        spectrum = spectrum.pow(2.0)
    banks = mel_banks(num_mel_bins, padded_size, sample_frequency, low_freq, high_freq)
    energies = spectrum @ torch.nn.functional.pad(banks, (0, 1)).T.to(dtype=dtype, device=device)
    return torch.maximum(energies, epsilon).log() if use_log_fbank else energies


def mel_banks(
    bins: int, padded_size: int, sample_frequency: float, low_freq: float, high_freq: float
) -> torch.Tensor:
    """Kaldi's triangular mel filters (bins x padded_size / 2), evenly spaced on its mel scale."""
    if high_freq <= 0.0:
        high_freq += sample_frequency / 2
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (bins + 1)
    index = torch.arange(bins).unsqueeze(1)
    left, centre, right = (mel_low + (index + offset) * delta for offset in (0.0, 1.0, 2.0))
    frequencies = sample_frequency / padded_size * torch.arange(padded_size // 2)
    mel = 1127.0 * torch.log1p(frequencies / 700.0).unsqueeze(0)
    rising = (mel - left) / (centre - left)
    falling = (right - mel) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def _mel(frequency: float) -> float:
    return 1127.0 * math.log(1.0 + frequency / 700.0)
