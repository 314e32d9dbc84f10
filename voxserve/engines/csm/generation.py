"""One thread runs CSM's ``generate``; each request gets its Mimi frames as they are sampled.

CSM's ``generate`` samples one frame (80 ms, every codebook) a step: the backbone draws
codebook 0, the depth decoder the others. Two hooks into each step do the streaming:

- the streamer: ``generate`` hands it each step's frames (a row each, batch x codebooks), and
  each row's frame goes on its job's queue; a frame of end codes (CSM's own end test: every
  codebook but the last at ``codebook_eos_token_id``) ends the job instead;
- a stopping criterion, called after every step, ends a row whose job was cancelled or reached
  its own frame limit. CSM's ``generate`` keeps only stopping criteria that are
  ``MaxLengthCriteria`` (it drops any other, with a warning), so this one is one.

The prompt goes in as embeddings, made as the model's own ``_merge_input_ids_with_input_values``
makes them for audio it encodes itself: text tokens from the text table, each audio token from
its frame's codes, each ``<|audio_eos|>`` from a frame of end codes. Context audio is thus held
as codes, never encoded again.

Batching, cancellation and the worker's life are Higgs' (``higgs.generation``): jobs that arrive
together and sample alike share one ``generate``, rows left-padded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import MaxLengthCriteria, StoppingCriteriaList

from voxserve.engines.csm.prompts import CsmPrompt
from voxserve.engines.higgs.generation import GenerationJob, GenerationWorker


@dataclass(frozen=True)
class Sampler:
    """How every codebook is drawn: the request's ``Sampling`` over the engine's settings."""

    temperature: float
    top_k: int
    top_p: float


class CsmWorker(GenerationWorker):
    """Higgs' batching worker, running CSM's ``generate``."""

    def _generate(self, jobs: list[GenerationJob]) -> None:
        sampling = self._sampling(jobs[0])
        draw = {
            "do_sample": True,
            "temperature": sampling.temperature,
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
        }
        self.model.generate(
            **collate(self.model, [job.prompt for job in jobs]),
            max_new_tokens=max(job.max_new_tokens for job in jobs),
            streamer=_FrameTap(self.model, jobs),
            stopping_criteria=StoppingCriteriaList([_JobsDone(jobs)]),
            # The depth decoder draws the other codebooks alike (Sesame's generator does).
            **draw,
            **{f"depth_decoder_{name}": value for name, value in draw.items()},
        )


def embed(model: Any, prompt: CsmPrompt) -> torch.Tensor:
    """The prompt's input embeddings (tokens x hidden)."""
    config = model.config
    input_ids = prompt.input_ids.to(model.device)
    embeddings = model.embed_text_tokens(input_ids)
    if prompt.audio is not None:
        frames = model.backbone_model.embed_tokens(prompt.audio.to(model.device)[None])[0]
        embeddings[input_ids == config.audio_token_id] = frames
    ends = input_ids == config.audio_eos_token_id
    if ends.any():
        end = torch.full((1, 1, config.num_codebooks), config.codebook_eos_token_id)
        embeddings[ends] = model.backbone_model.embed_tokens(end.to(model.device))[0, 0]
    return embeddings


def collate(model: Any, prompts: list[CsmPrompt]) -> dict[str, torch.Tensor]:
    """Prompts as one batch of embeddings, left-padded and masked."""
    embedded = [embed(model, prompt) for prompt in prompts]
    longest = max(len(rows) for rows in embedded)
    batch = embedded[0].new_zeros((len(embedded), longest, embedded[0].shape[-1]))
    mask = torch.zeros((len(embedded), longest), dtype=torch.long, device=model.device)
    for row, rows in enumerate(embedded):
        batch[row, longest - len(rows) :] = rows
        mask[row, longest - len(rows) :] = 1
    return {"inputs_embeds": batch, "attention_mask": mask}


class _FrameTap:
    """``generate``'s streamer: the prompt first (nothing to take), then each step's frames."""

    def __init__(self, model: Any, jobs: list[GenerationJob]):
        self.end_code = model.config.codebook_eos_token_id
        self.jobs = jobs
        self._prompt = True

    def put(self, value: torch.Tensor) -> None:
        if self._prompt:
            self._prompt = False
            return
        for row, job in enumerate(self.jobs):
            if job.finished.is_set():
                continue
            frame = value[row]
            if bool((frame[:-1] == self.end_code).all()):
                job._end()
            else:
                job._put(frame)

    def end(self) -> None:
        """Every job ends by the tap, the criterion, or the worker: nothing left to do."""


class _JobsDone(MaxLengthCriteria):
    """Ends each row whose job is cancelled or at its own limit: a ``MaxLengthCriteria`` in name,
    so that CSM's ``generate`` keeps it; the batch's own length limit is ``max_new_tokens``."""

    def __init__(self, jobs: list[GenerationJob]):
        super().__init__(max_length=max(job.max_new_tokens for job in jobs))
        self.jobs = jobs

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = []
        for job in self.jobs:
            if not job.finished.is_set():
                job.steps += 1
                if job.cancelled.is_set() or job.steps >= job.max_new_tokens:
                    job._end()
            done.append(job.finished.is_set())
        return torch.tensor(done, device=input_ids.device)
