"""One thread runs Higgs Audio V2's ``generate``; requests get their code columns as they come.

``generate`` returns only when it is done, its streamer sees text ids only, and it refuses custom
logits processors, so two hooks into each decoding step do the streaming:

- a forward pre-hook on the model sees, at every decoding step, the column of codes sampled at the
  step before (the model's next input), and hands each row's column to its job's queue;
- a stopping criterion, called after every step, ends a row when its job was cancelled, has
  reached its own token limit, or the model ended its stream; it also puts the end marker on the
  job's queue, so a job finishes as soon as its own row does.

Jobs that arrive together (within ``batch_wait`` seconds, up to ``max_batch``) share one batched
``generate`` call: one forward pass per step serves them all, which is where a GPU has throughput to
spare. Rows are left-padded; ``generate`` runs until its last row ends, and a job submitted
meanwhile waits for the next batch (static batching: ``generate`` cannot take rows mid-flight).
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from voxserve.engines.higgs.prompts import PromptTokens

_END = object()


@dataclass(frozen=True)
class Sampler:
    """How the model draws each code: the request's ``Sampling`` over the engine's settings,
    every value set, and repetition-aware sampling, which only the engine configures."""

    temperature: float
    top_p: float
    top_k: int
    ras_window: int
    """Repetition-aware sampling: tokens repeated this many steps back are resampled (0: off)."""
    ras_max_repeat: int


@dataclass(eq=False)
class GenerationJob:
    prompt: PromptTokens
    max_new_tokens: int
    seed: int | None = None
    sampling: Sampler | None = None
    """None: the worker's configured sampling. Only jobs that sample alike share a batch."""
    steps: int = 0
    """Decoding steps taken so far."""
    started: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    _columns: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)

    def columns(self) -> Iterator[torch.Tensor]:
        """Code columns (shape (codebooks,), on the CPU) as they are generated; raises what
        generation raised."""
        while (item := self._columns.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        """Stop generating for this job: its row ends within a step, and a job still waiting
        for its batch is dropped when it comes up. Returns at once: a stream closed on the event
        loop must not wait for the GPU's step."""
        self.cancelled.set()

    def _put(self, item: Any) -> None:
        self._columns.put(item)

    def _end(self, error: BaseException | None = None) -> None:
        if not self.finished.is_set():
            self._columns.put(error if error is not None else _END)
            self.finished.set()


@dataclass
class WorkerStats:
    batches: int = 0
    jobs: int = 0
    largest_batch: int = 0


class GenerationWorker:
    """Owns the model's ``generate``: a daemon thread serving submitted jobs in batches."""

    def __init__(
        self, model: Any, sampling: Sampler, *, max_batch: int, batch_wait: float,
        engine: str = "higgs",
    ):  # fmt: skip
        self.model = model
        self.engine = engine
        self.sampling = sampling
        self.max_batch = max_batch
        self.batch_wait = batch_wait
        self.stats = WorkerStats()
        self._jobs: queue.Queue = queue.Queue()
        self._next: GenerationJob | None = None  # came while gathering, but samples differently
        self._busy = threading.Event()
        self._closing = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=f"{engine}-generate", daemon=True)
        self._thread.start()

    def submit(self, job: GenerationJob) -> GenerationJob:
        with self._closing:  # nothing may queue behind the close marker
            if self._closed or not self._thread.is_alive():
                raise RuntimeError(f"the {self.engine} engine was unloaded")
            self._jobs.put(job)
        return job

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the current batch; jobs still waiting end with an error."""
        with self._closing:
            self._closed = True
            self._jobs.put(None)
        self._thread.join(timeout)

    @property
    def idle(self) -> bool:
        """No batch is running and none is waiting."""
        return not self._busy.is_set() and self._jobs.empty()

    def _serve(self) -> None:
        while (job := self._take_next() or self._jobs.get()) is not None:
            self._busy.set()
            batch = [job]
            closing = self._gather(batch)
            self._run(batch)
            self._busy.clear()
            if closing:
                break
        while True:  # refuse what arrived after close
            try:
                left = self._jobs.get_nowait()
            except queue.Empty:
                return
            if left is not None:
                left._end(RuntimeError(f"the {self.engine} engine was unloaded"))

    def _take_next(self) -> GenerationJob | None:
        job, self._next = self._next, None
        return job

    def _gather(self, batch: list[GenerationJob]) -> bool:
        """Add jobs arriving within the batch window; True if the close marker came."""
        while len(batch) < self.max_batch:
            try:
                job = self._jobs.get(timeout=self.batch_wait)
            except queue.Empty:
                return False
            if job is None:
                return True
            if self._sampling(job) != self._sampling(batch[0]):
                self._next = job  # one generate() samples one way: it leads the next batch
                return False
            batch.append(job)
        return False

    def _sampling(self, job: GenerationJob) -> Sampler:
        return job.sampling or self.sampling

    def _run(self, batch: list[GenerationJob]) -> None:
        for job in batch:
            job.started.set()  # before looking at `cancelled`: see GenerationJob.cancel
            if job.cancelled.is_set():
                job._end()
        live = [job for job in batch if not job.finished.is_set()]
        if not live:
            return
        self.stats.batches += 1
        self.stats.jobs += len(live)
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        try:
            if live[0].seed is not None:
                torch.manual_seed(live[0].seed)  # one RNG per batch: exact for a batch of one
            with torch.inference_mode():
                self._generate(live)
        except Exception as error:  # the jobs' consumers raise it; the worker lives on
            for job in live:
                job._end(error)
        finally:
            for job in live:
                job._end()

    def _generate(self, jobs: list[GenerationJob]) -> None:
        """One batched ``generate`` of ``jobs``: each row's columns put on its job's queue as
        they come, each job ended with its row. Another engine's worker overrides this alone."""
        hook = self.model.register_forward_pre_hook(_ColumnTap(jobs), with_kwargs=True)
        try:
            self.model.generate(
                **collate(self.model, [job.prompt for job in jobs]),
                generation_config=self._generation_config(jobs),
                stopping_criteria=StoppingCriteriaList([_JobsDone(self.model, jobs)]),
            )
        finally:
            hook.remove()

    def _generation_config(self, jobs: list[GenerationJob]) -> Any:
        config = copy.deepcopy(self.model.generation_config)
        sampling = self._sampling(jobs[0])
        config.update(
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_new_tokens=max(job.max_new_tokens for job in jobs),
            eos_token_id=self.model.config.eos_token_id,
            pad_token_id=self.model.config.pad_token_id,
        )
        if sampling.ras_window > 0:
            # Read by the port's _sample() as attributes of the generation config.
            config.ras_win_len = sampling.ras_window
            config.ras_win_max_num_repeat = sampling.ras_max_repeat
        return config


def collate(model: Any, prompts: list[PromptTokens]) -> dict[str, torch.Tensor]:
    """Batch prompts as the processor does: text left-padded, audio columns right-padded with
    stream-end codes and masked."""
    device = model.device
    config = model.config
    longest = max(len(prompt.input_ids) for prompt in prompts)
    input_ids = torch.full((len(prompts), longest), config.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, longest - len(prompt.input_ids) :] = prompt.input_ids
        attention_mask[row, longest - len(prompt.input_ids) :] = 1
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    audio = [prompt.audio for prompt in prompts]
    lengths = [0 if clip is None else len(clip) for clip in audio]
    if max(lengths):
        columns = torch.full(
            (len(prompts), max(lengths), config.num_codebooks),
            config.audio_stream_eos_id,
            dtype=torch.long,
        )
        for row, clip in enumerate(audio):
            if clip is not None:
                columns[row, : len(clip)] = clip
        mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
        inputs |= {"audio_input_ids": columns.to(device), "audio_input_ids_mask": mask.to(device)}
    return inputs


class _ColumnTap:
    """Forward pre-hook: a decoding step's input is the column each row sampled last step."""

    def __init__(self, jobs: list[GenerationJob]):
        self.jobs = jobs

    def __call__(self, module: Any, args: tuple, kwargs: dict) -> None:
        columns = kwargs.get("audio_input_ids")
        if kwargs.get("input_ids") is not None or columns is None:
            return  # the prefill: the prompt, not generated codes
        columns = columns[:, -1].cpu()
        for row, job in enumerate(self.jobs):
            if not job.finished.is_set():
                job._put(columns[row])


class _JobsDone(StoppingCriteria):
    """Ends each row whose job is cancelled, at its own limit, or whose stream has ended."""

    def __init__(self, model: Any, jobs: list[GenerationJob]):
        self.eos_token_id = model.config.eos_token_id
        self.jobs = jobs

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        # The port appends the text end token once a row's codebooks have all ended.
        ended = (input_ids[:, -1] == self.eos_token_id).tolist()
        done = []
        for row, job in enumerate(self.jobs):
            if not job.finished.is_set():
                job.steps += 1
                if ended[row] or job.cancelled.is_set() or job.steps >= job.max_new_tokens:
                    job._end()
            done.append(job.finished.is_set())
        return torch.tensor(done, device=input_ids.device)
