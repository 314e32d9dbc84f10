"""Chatterbox's T3 speaking a text as S3 speech tokens, one token a step.

Upstream's ``T3.inference`` runs the whole loop and returns every token at the end, so nothing
can be heard before the last one. ``speech_tokens`` is the same loop as a generator: the same
conditioning, the same classifier-free guidance (the text's and a text-less row, combined as
``cond + w * (cond - uncond)``), the same repetition penalty, temperature, min-p and top-p, the
same KV cache, each token yielded as it is sampled. Two things differ:

- ``cfg_weight = 0`` runs the conditioned row alone (upstream builds a batch of one and then
  indexes its second row: a tensor-size error inside ``T3.inference``);
- sampling draws from the call's own ``torch.Generator``, so a seed gives the same take however
  many calls run at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TopPLogitsWarper,
)

SPEECH_VOCAB = 6561
"""Tokens below this are speech; the ones above are T3's start and stop markers."""


@dataclass(frozen=True)
class TokenSampling:
    """How one call samples (the settings, then the profile's and request's options)."""

    temperature: float
    cfg_weight: float
    repetition_penalty: float
    min_p: float
    top_p: float
    max_new_tokens: int


def speech_tokens(
    t3: Any, conditioning: Any, text_tokens: torch.Tensor, sampling: TokenSampling, generator
) -> Iterator[int]:
    """The speech tokens T3 says ``text_tokens`` (1 x n, without start and stop) with, until its
    stop token or ``max_new_tokens``; stop and start markers are not yielded."""
    hp = t3.hp
    guided = sampling.cfg_weight > 0.0
    rows = 2 if guided else 1
    processors = [
        RepetitionPenaltyLogitsProcessor(penalty=float(sampling.repetition_penalty)),
        _Temperature(sampling.temperature),
        MinPLogitsWarper(min_p=sampling.min_p),
        TopPLogitsWarper(top_p=sampling.top_p),
    ]
    # Each step in inference mode of its own: a step may run on another thread than the last
    # (the mode is per thread), and never while the generator waits.
    with torch.inference_mode():
        text = text_tokens.to(t3.device, torch.long).expand(rows, -1)
        text = F.pad(text, (1, 0), value=hp.start_text_token)
        text = F.pad(text, (0, 1), value=hp.stop_text_token)
        start = torch.full((rows, 1), hp.start_speech_token, dtype=torch.long, device=t3.device)
        embeds, _ = t3.prepare_input_embeds(
            t3_cond=conditioning,
            text_tokens=text,
            speech_tokens=start,
            cfg_weight=sampling.cfg_weight,
        )
        # Upstream feeds the start token twice (once in the embeds, once as the first step).
        first = t3.speech_emb(start) + t3.speech_pos_emb.get_fixed_embedding(0)
        inputs, cache, generated = torch.cat([embeds, first], dim=1), None, start[:1]
    for step in range(sampling.max_new_tokens):
        with torch.inference_mode():
            output = t3.tfmr(inputs_embeds=inputs, cache=cache, use_cache=True)
            cache = output.cache
            logits = t3.speech_head(output.last_hidden_state[:, -1])
            if guided:
                logits = logits[:1] + sampling.cfg_weight * (logits[:1] - logits[1:])
            for processor in processors:
                logits = processor(generated, logits)
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            if token.item() == hp.stop_speech_token:
                return
            generated = torch.cat([generated, token], dim=1)
            embedded = t3.speech_emb(token) + t3.speech_pos_emb.get_fixed_embedding(step + 1)
            inputs = embedded.expand(rows, -1, -1)
        if token.item() < SPEECH_VOCAB:
            yield int(token.item())


class _Temperature:
    """Upstream divides by the temperature unless it is 1; so does this."""

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores if self.temperature == 1.0 else scores / self.temperature
