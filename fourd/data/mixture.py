"""A seeded mixture of named sources with fixed ratios, shardable across ranks and resumable.

:class:`MixtureDataset` maps a global position ``p`` (an int that keeps counting across epochs;
epoch ``p // epoch_size``) to a (source, index) pair and a sample; everything is a pure function of
(``seed``, ``p``), so any worker on any rank reproduces it. :class:`MixtureSampler` hands each rank
its share of an epoch's positions and records where it stopped, for exact resumption.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Optional

import numpy as np
from torch.utils.data import Dataset, Sampler

from fourd.data.datasets import SceneSource
from fourd.data.transforms import reverse_views

__all__ = ["DEFAULT_RATIOS", "MixtureDataset", "MixtureSampler"]

DEFAULT_RATIOS = {"objects_4d": 0.4, "scenes_4d": 0.2, "homography_video": 0.2, "static": 0.2}


class MixtureDataset(Dataset):
    """Samples from named ``sources`` in proportion to ``ratios`` (default :data:`DEFAULT_RATIOS`).

    Each epoch of ``epoch_size`` positions (default: total source length) draws every position's
    source i.i.d. with the ratios, and walks each source through fresh random permutations of its
    scenes. Augmentation: the view order of a sample is reversed with probability
    ``reverse_views_prob`` (paper, App. C). Samples are the sources' dicts plus ``source`` (name)
    and ``views_reversed`` (bool).
    """

    def __init__(self, sources: Mapping[str, SceneSource], ratios: Optional[Mapping[str, float]] = None, seed: int = 0,
                 epoch_size: Optional[int] = None, reverse_views_prob: float = 0.5) -> None:
        ratios = dict(DEFAULT_RATIOS if ratios is None else ratios)
        if set(ratios) != set(sources):
            raise ValueError(f"MixtureDataset: ratios name {sorted(ratios)} but sources are {sorted(sources)}")
        if any(r < 0 for r in ratios.values()) or sum(ratios.values()) <= 0:
            raise ValueError(f"MixtureDataset: ratios must be non-negative with a positive sum, got {ratios}")
        empty = [name for name, src in sources.items() if len(src) == 0 and ratios[name] > 0]
        if empty:
            raise ValueError(f"MixtureDataset: sources {empty} are empty")
        self.names = sorted(sources)
        self.sources = dict(sources)
        total = sum(ratios.values())
        self.ratios = np.array([ratios[n] / total for n in self.names])
        self.seed = seed
        self.epoch_size = int(epoch_size or sum(len(s) for s in sources.values()))
        self.reverse_views_prob = reverse_views_prob
        self._plans: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.epoch_size

    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Source ids [epoch_size] and scene indices [epoch_size] of one epoch (the last two are cached)."""
        if epoch in self._plans:
            return self._plans[epoch]
        if len(self._plans) >= 2:
            self._plans.pop(min(self._plans))
        rng = np.random.default_rng([self.seed, epoch])
        which = rng.choice(len(self.names), size=self.epoch_size, p=self.ratios)
        index = np.zeros(self.epoch_size, dtype=np.int64)
        for s, name in enumerate(self.names):
            slots = np.flatnonzero(which == s)
            n = len(self.sources[name])
            if len(slots):
                cycles = -(-len(slots) // n)
                order = np.concatenate([rng.permutation(n) for _ in range(cycles)])
                index[slots] = order[: len(slots)]
        self._plans[epoch] = (which, index)
        return which, index

    def locate(self, position: int) -> tuple[str, int]:
        """(source name, scene index) of global ``position``."""
        if position < 0:
            raise IndexError(f"MixtureDataset: position must be >= 0, got {position}")
        which, index = self._epoch_plan(position // self.epoch_size)
        i = position % self.epoch_size
        return self.names[which[i]], int(index[i])

    def __getitem__(self, position: int) -> dict:
        name, index = self.locate(position)
        rng = np.random.default_rng([self.seed, position, 1])
        sample = self.sources[name].sample(index, rng)
        reverse = bool(rng.random() < self.reverse_views_prob)
        if reverse:
            sample = reverse_views(sample)
        sample["source"] = name
        sample["views_reversed"] = reverse
        return sample


class MixtureSampler(Sampler[int]):
    """Global positions of a :class:`MixtureDataset` for one rank, DistributedSampler-style.

    Epoch ``e`` yields ``e * epoch_size + rank + k * world_size`` for ``k < epoch_size //
    world_size`` (the tail is dropped so all ranks see equally many), starting at ``k = start``.
    ``state_dict()`` gives ``{"epoch", "index"}`` with ``index`` the positions yielded so far in this
    epoch; a DataLoader prefetches, so to resume exactly store ``{"epoch": e, "index": samples the
    training step consumed on this rank}`` instead and pass it to ``load_state_dict``.
    """

    def __init__(self, epoch_size: int, rank: int = 0, world_size: int = 1, epoch: int = 0, start: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"MixtureSampler: rank {rank} not in [0, {world_size})")
        self.epoch_size, self.rank, self.world_size = epoch_size, rank, world_size
        self.epoch, self.start, self._yielded = epoch, start, start

    def __len__(self) -> int:
        return self.epoch_size // self.world_size - self.start

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` from its beginning (unless it is the epoch being resumed)."""
        if epoch != self.epoch:
            self.epoch, self.start, self._yielded = epoch, 0, 0

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.epoch_size + self.rank
        for k in range(self.start, self.epoch_size // self.world_size):
            self._yielded = k + 1
            yield base + k * self.world_size
        self.start = 0

    def state_dict(self) -> dict:
        """``{"epoch": e, "index": k}``: positions this rank has yielded in epoch ``e``."""
        return {"epoch": self.epoch, "index": self._yielded}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume at epoch ``state["epoch"]``, this rank's ``state["index"]``-th position."""
        self.epoch, self.start, self._yielded = int(state["epoch"]), int(state["index"]), int(state["index"])
