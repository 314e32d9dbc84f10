"""S3Gen decoding speech tokens while T3 is still generating them, as CosyVoice 2 streams.

Upstream decodes once, every token at the end. ``StreamingDecoder.push`` takes the tokens so far
and gives only the audio that is new, each join crossfaded:

- flow: S3Gen's flow matching runs over the reference's tokens and every token so far, and the
  mel frames after those already voiced are kept. Until the end the frames of the last three
  tokens wait (the encoder looks three tokens ahead). Its starting noise is fixed for the call
  (drawn once from the call's generator), so frames decoded again come out alike;
- randomness: the flow's noise is the call's own (above); HiFT-GAN's source draws from torch's
  global generator, so each decode forks it, seeded from the call's generator: a seed gives the
  same audio every time (the fork is process-wide: one decode at a time, as the engine admits);
- HiFT-GAN: the new frames are voiced after the last ``overlap`` frames of the previous decode,
  with the previous excitation (``cache_source``) over those frames, so the glottal source runs
  on unbroken; the samples of the overlap, held back last time, are crossfaded (a Hamming
  window) with their new version, and the new tail is held back in turn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from voxserve.engines.chatterbox.generation import SPEECH_VOCAB

TOKEN_MEL_RATIO = 2
"""Mel frames per speech token (25 tokens and 50 frames a second)."""
LOOKAHEAD_TOKENS = 3
"""Tokens the flow's encoder reads ahead: their frames wait for the next decode."""
SAMPLES_PER_FRAME = 480
"""HiFT-GAN's samples per mel frame (24 kHz, 50 frames a second)."""


class StreamingDecoder:
    def __init__(
        self,
        s3gen: Any,
        reference: dict[str, Any],
        *,
        flow_steps: int,
        overlap: int,
        generator: torch.Generator,
        max_tokens: int,
    ):
        self.s3gen, self.reference, self.flow_steps = s3gen, reference, flow_steps
        self.overlap = overlap
        """Mel frames voiced again at each join."""
        self.overlap_samples = overlap * SAMPLES_PER_FRAME
        window = torch.from_numpy(np.hamming(2 * self.overlap_samples).astype(np.float32))
        self.fade_in, self.fade_out = window[: self.overlap_samples], window[self.overlap_samples :]
        self.generator = generator
        frames = reference["prompt_feat"].shape[1] + TOKEN_MEL_RATIO * max_tokens
        self.noise = torch.randn(1, 80, frames, generator=generator, device=generator.device).to(
            s3gen.device, s3gen.dtype
        )
        self.frames_voiced = 0
        """Mel frames of the generated speech whose audio is out (or held back for the join)."""
        self.joins = 0
        self._mel_tail: torch.Tensor | None = None
        self._source_tail: torch.Tensor | None = None
        self._speech_tail: torch.Tensor | None = None

    def push(self, tokens: list[int], final: bool = False) -> np.ndarray:
        """The audio that ``tokens`` (every token so far) add, float32 at 24 kHz; at ``final``,
        the rest, held-back tail included."""
        usable = [token for token in tokens if token < SPEECH_VOCAB]
        if not final:
            # Enough new frames to hold a join's overlap back, or wait for more.
            new = TOKEN_MEL_RATIO * (len(usable) - LOOKAHEAD_TOKENS) - self.frames_voiced
            if new < self.overlap:
                return np.zeros(0, dtype=np.float32)
        elif not usable:
            return self._flush()
        seed = int(
            torch.randint(2**31, (1,), generator=self.generator, device=self.generator.device)
        )
        cuda = self.s3gen.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.s3gen.device] if cuda else []):
            torch.manual_seed(seed)
            mel = self._flow(usable, final)[:, :, self.frames_voiced :]
            if mel.shape[2] == 0:
                return self._flush() if final else np.zeros(0, dtype=np.float32)
            self.frames_voiced += mel.shape[2]
            return self._voice(mel, final)

    def _flow(self, tokens: list[int], final: bool) -> torch.Tensor:
        """Mel frames of the generated speech so far (80 x frames); before the end, without the
        frames of the last three tokens, which lack their look-ahead. (Upstream's own
        ``finalize=False`` cuts the encoder's output but not its mask: a size error.)"""
        s3gen, reference = self.s3gen, self.reference
        speech = torch.tensor([tokens], dtype=torch.long, device=s3gen.device)
        # All of the flow's noise, the reference's frames' too (they are attended to).
        frames = TOKEN_MEL_RATIO * (reference["prompt_token"].shape[1] + len(tokens))
        mel, _ = s3gen.flow.inference(
            token=speech,
            token_len=torch.tensor([len(tokens)], device=s3gen.device),
            finalize=True,
            n_timesteps=self.flow_steps,
            noised_mels=self.noise[:, :, :frames],
            meanflow=s3gen.meanflow,
            **reference,
        )
        if not final:
            mel = mel[:, :, : -LOOKAHEAD_TOKENS * TOKEN_MEL_RATIO]
        return mel.to(s3gen.dtype)

    def _voice(self, mel: torch.Tensor, final: bool) -> np.ndarray:
        s3gen = self.s3gen
        first = self._mel_tail is None
        if not first:
            mel = torch.cat([self._mel_tail, mel], dim=2)
        source = self._source_tail if not first else torch.zeros(1, 1, 0, device=s3gen.device)
        speech, excitation = s3gen.mel2wav.inference(speech_feat=mel, cache_source=source)
        speech = speech[0].float().cpu()
        if first:
            # Upstream's fade-in against spill-over from the reference: 20 ms of silence, 20 ms
            # rising.
            fade = s3gen.trim_fade.float().cpu()
            speech[: len(fade)] *= fade[: len(speech)]
        else:
            self.joins += 1
            n = self.overlap_samples
            speech[:n] = speech[:n] * self.fade_in + self._speech_tail * self.fade_out
        if final:
            self._mel_tail = self._source_tail = self._speech_tail = None
            return speech.numpy()
        n = self.overlap_samples
        self._mel_tail = mel[:, :, -self.overlap :]
        self._source_tail = excitation[:, :, -n:]
        self._speech_tail = speech[-n:].clone()
        return speech[:-n].numpy()

    def _flush(self) -> np.ndarray:
        """The held-back tail, when the end brings no new frames."""
        tail, self._speech_tail = self._speech_tail, None
        self._mel_tail = self._source_tail = None
        return np.zeros(0, dtype=np.float32) if tail is None else tail.numpy()
