"""Training data through a torch ``DataLoader``: micro-batches as a pure function of (step, data-parallel rank).

A task describes its data as a :class:`TaskData`: a map-style ``dataset`` indexed by
:class:`SampleKey` ``(index, step)`` (global sample index, 0-based optimizer step the sample is
consumed in) and a ``collate`` that turns one micro-batch's samples into the task's batch (both run
in the loader's worker processes). :class:`StepLoader` reads it:

- :class:`StepSampler` gives data-parallel rank ``r`` of ``D`` its ``j``-th micro-batch as the
  global micro-batch ``g = j * D + r``, i.e. the samples ``g * micro_batch + i`` (``i <
  micro_batch``), consumed in optimizer step ``j // accumulation``. A progressive schedule (the clip
  length changes at a step) is therefore known for every prefetched sample, and a dataset that
  buckets shapes (:mod:`fourd.data.buckets`) draws one bucket per global micro-batch
  (``index // micro_batch``).
- Workers (``LoaderConfig.workers``; 0 = read in the training process) are persistent, prefetch
  ``prefetch`` micro-batches each and, with CUDA, hand out pinned memory; batches are moved to the
  device with ``non_blocking`` copies.
- Every sample must draw its randomness from generators seeded by its key (never from a worker's
  global RNG), so any worker reproduces it. The ``DataLoader`` gets its own generator: creating
  an iterator never touches the training process's global RNG (which the model's dropout uses).
- The state is what training *consumed* (``{"position": samples, "skipped": corrupt samples}``),
  not what workers prefetched: a resumed loader starts at that position and repeats the
  uninterrupted run's micro-batches exactly.
- Samples (dicts) report ``skipped``: corrupt scenes a source skipped to produce them
  (:class:`fourd.data.SceneSource`); the loader sums them over consumed micro-batches.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["SampleKey", "LoaderConfig", "TaskData", "StepSampler", "StepLoader", "to_device"]

log = logging.getLogger(__name__)


class SampleKey(NamedTuple):
    """What a training dataset is indexed by: the global sample ``index`` and the 0-based optimizer
    ``step`` it is consumed in (for step schedules such as the clip length)."""

    index: int
    step: int


@dataclass
class LoaderConfig:
    """The ``train.loader`` node: ``workers`` (loader processes per rank; 0 = load in the training
    process, synchronously), ``prefetch`` (micro-batches each worker prepares ahead),
    ``pin_memory`` (page-locked batches for asynchronous host-to-GPU copies; ignored without CUDA),
    ``persistent`` (keep the workers alive for the whole run)."""

    workers: int = 2
    prefetch: int = 2
    pin_memory: bool = True
    persistent: bool = True

    def __post_init__(self) -> None:
        if self.workers < 0 or self.prefetch < 1:
            raise ValueError(f"train.loader: workers must be >= 0 and prefetch >= 1, got workers={self.workers} prefetch={self.prefetch}")


@dataclass
class TaskData:
    """A task's training data: ``dataset[SampleKey] -> sample`` and ``collate(samples) -> batch``
    (CPU tensors; both are pickled into the worker processes)."""

    dataset: Dataset
    collate: Callable[[list], Any]


class StepSampler(Sampler[list[SampleKey]]):
    """Endless micro-batches of :class:`SampleKey` for one data-parallel rank (module docstring),
    starting at this rank's ``start``-th micro-batch."""

    def __init__(self, micro_batch: int, accumulation: int = 1, dp_rank: int = 0, dp_size: int = 1, start: int = 0) -> None:
        if micro_batch < 1 or accumulation < 1 or not 0 <= dp_rank < dp_size or start < 0:
            raise ValueError(f"StepSampler: need micro_batch, accumulation >= 1, 0 <= dp_rank < dp_size and start >= 0, got "
                             f"{micro_batch}, {accumulation}, {dp_rank}, {dp_size}, {start}")
        self.micro_batch, self.accumulation, self.dp_rank, self.dp_size, self.start = micro_batch, accumulation, dp_rank, dp_size, start

    def keys(self, j: int) -> list[SampleKey]:
        """This rank's ``j``-th micro-batch."""
        g = j * self.dp_size + self.dp_rank
        return [SampleKey(g * self.micro_batch + i, j // self.accumulation) for i in range(self.micro_batch)]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        j = self.start
        while True:
            yield self.keys(j)
            j += 1


class _Collate:
    """The task's collate plus the micro-batch's count of skipped corrupt samples (picklable)."""

    def __init__(self, collate: Callable[[list], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list) -> tuple[Any, int]:
        return self.collate(samples), sum(int(s.get("skipped", 0)) for s in samples if isinstance(s, Mapping))


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``obj`` with every tensor (inside dicts, lists and tuples, types kept) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return type(obj)({k: to_device(v, device, non_blocking) for k, v in obj.items()})
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_device(v, device, non_blocking) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    return obj


class StepLoader:
    """One rank's training micro-batches from a :class:`TaskData` (see the module docstring)."""

    def __init__(self, data: TaskData, micro_batch: int, accumulation: int = 1, dp_rank: int = 0, dp_size: int = 1,
                 cfg: LoaderConfig = LoaderConfig(), seed: int = 0) -> None:
        self.data, self.cfg, self.seed = data, cfg, seed
        self.sampler = StepSampler(micro_batch, accumulation, dp_rank, dp_size)
        self.consumed = 0  # micro-batches this rank has taken
        self.skipped = 0  # corrupt samples skipped to build them
        self._loader: Optional[DataLoader] = None
        self._iter: Optional[Iterator] = None

    def _start(self) -> Iterator:
        self.close()
        self.sampler.start = self.consumed
        workers = self.cfg.workers
        extra = {"prefetch_factor": self.cfg.prefetch, "persistent_workers": self.cfg.persistent} if workers > 0 else {}
        self._loader = DataLoader(self.data.dataset, batch_sampler=self.sampler, num_workers=workers, collate_fn=_Collate(self.data.collate),
                                  pin_memory=self.cfg.pin_memory and torch.cuda.is_available(),
                                  generator=torch.Generator().manual_seed(self.seed), **extra)
        self._iter = iter(self._loader)
        return self._iter

    def next(self, device: torch.device) -> Any:
        """This rank's next micro-batch, on ``device``."""
        batch, skipped = next(self._start() if self._iter is None else self._iter)
        self.consumed += 1
        if skipped:
            self.skipped += skipped
            log.warning("data: %d corrupt samples skipped in this micro-batch (%d so far on this rank)", skipped, self.skipped)
        return to_device(batch, device, non_blocking=device.type == "cuda")

    def keys(self, j: int) -> list[SampleKey]:
        """The keys of this rank's ``j``-th micro-batch (for inspection)."""
        return self.sampler.keys(j)

    def state_dict(self) -> dict[str, int]:
        """``{"position": samples this rank consumed, "skipped": corrupt samples skipped for them}``."""
        return {"position": self.consumed * self.sampler.micro_batch, "skipped": self.skipped}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume after the samples ``state["position"]`` (prefetched ones are dropped and read again)."""
        position, mb = int(state["position"]), self.sampler.micro_batch
        if position % mb:
            raise ValueError(f"data position {position} of the checkpoint is not a multiple of train.micro_batch={mb}: "
                             "resume with the micro-batch size the run was started with")
        self.close()
        self.consumed, self.skipped = position // mb, int(state.get("skipped", 0))

    def close(self) -> None:
        """Stop the workers (a later :meth:`next` starts them again at the consumed position)."""
        if self._iter is not None and hasattr(self._iter, "_shutdown_workers"):
            self._iter._shutdown_workers()
        self._loader = self._iter = None

