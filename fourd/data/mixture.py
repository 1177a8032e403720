"""A seeded mixture of named sources with fixed ratios, optionally bucketed by grid shape.

:class:`MixtureDataset` maps a global position ``p`` (an int that keeps counting across epochs;
epoch ``p // epoch_size``) to a (source, scene index, grid) triple and a sample; everything is a
pure function of (``seed``, ``p``, clip length), so any worker on any rank reproduces it. Training
reads positions through :class:`fourd.data.loader.StepSampler` (micro-batches by step and
data-parallel rank, resumable at the consumed position).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from fourd.data.buckets import Grid, assign
from fourd.data.datasets import SceneSource
from fourd.data.format import CorruptSampleError
from fourd.data.transforms import reverse_views

__all__ = ["DEFAULT_RATIOS", "MixtureDataset"]

DEFAULT_RATIOS = {"objects_4d": 0.4, "scenes_4d": 0.2, "homography_video": 0.2, "static": 0.2}
log = logging.getLogger(__name__)


class MixtureDataset(Dataset):
    """Samples from named ``sources`` in proportion to ``ratios`` (default :data:`DEFAULT_RATIOS`).

    Each epoch of ``epoch_size`` positions (default: total source length) draws every position's
    source i.i.d. with the ratios, and walks each source through fresh random permutations of its
    scenes. Augmentation: the view order of a sample is reversed with probability
    ``reverse_views_prob`` (paper, App. C). Samples are the sources' dicts plus ``source`` (name),
    ``views_reversed`` (bool) and ``grid`` (:class:`~fourd.data.buckets.Grid` or None).

    Buckets (``grids``, :mod:`fourd.data.buckets`): the sources' scenes are read once (metadata only)
    and assigned, per clip length (stage), to a grid. Positions come in groups of ``group_size``
    (the micro-batch: positions ``[g * group_size, (g + 1) * group_size)``); each group draws one
    grid of the stage with probability proportional to the bucket's size (each source's scenes
    weighted by its ratio over its scene count), then each position a source among those with
    scenes in that bucket (same weights, so the ratios hold overall) and a scene of it. A grid that
    no scene fits raises ``ValueError`` naming ``bucket_key[i]``. Without ``grids`` every sample has
    its source's own shape (``grid`` None).
    """

    def __init__(self, sources: Mapping[str, SceneSource], ratios: Optional[Mapping[str, float]] = None, seed: int = 0,
                 epoch_size: Optional[int] = None, reverse_views_prob: float = 0.5, grids: Optional[Sequence[Grid]] = None,
                 group_size: int = 1, bucket_key: str = "buckets") -> None:
        ratios = dict(DEFAULT_RATIOS if ratios is None else ratios)
        if set(ratios) != set(sources):
            raise ValueError(f"MixtureDataset: ratios name {sorted(ratios)} but sources are {sorted(sources)}")
        if any(r < 0 for r in ratios.values()) or sum(ratios.values()) <= 0:
            raise ValueError(f"MixtureDataset: ratios must be non-negative with a positive sum, got {ratios}")
        empty = [name for name, src in sources.items() if len(src) == 0 and ratios[name] > 0]
        if empty:
            raise ValueError(f"MixtureDataset: sources {empty} are empty")
        if group_size < 1:
            raise ValueError(f"MixtureDataset: group_size must be >= 1, got {group_size}")
        self.names = sorted(sources)
        self.sources = dict(sources)
        total = sum(ratios.values())
        self.ratios = np.array([ratios[n] / total for n in self.names])
        self.seed, self.group_size, self.reverse_views_prob = seed, group_size, reverse_views_prob
        size = int(epoch_size or sum(len(s) for s in sources.values()))
        self.epoch_size = -(-size // group_size) * group_size
        self.grids = list(grids) if grids is not None else None
        self._stages = self._assign(bucket_key) if self.grids is not None else {}
        self._plans: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._buckets: dict[Optional[int], dict[tuple[int, int], int]] = {}

    def __len__(self) -> int:
        return self.epoch_size

    # ----------------------------------------------------------------------------------- buckets
    def _assign(self, bucket_key: str) -> dict[int, tuple[list[Grid], dict[tuple[int, int], np.ndarray]]]:
        """Per clip length: its grids and the members ``{(source id, bucket id): scene indices}``."""
        metas = {name: self._metas(name) for name in self.names if self.ratios[self.names.index(name)] > 0}
        stages = {}
        for frames in sorted({g.frames for g in self.grids}):
            grids = [g for g in self.grids if g.frames == frames]
            members = {}
            for s, name in enumerate(self.names):
                if name not in metas:
                    continue
                bucket = np.array(assign(metas[name], grids, self.sources[name].fits), dtype=np.int64)
                for b in range(len(grids)):
                    if (bucket == b).any():
                        members[(s, b)] = np.flatnonzero(bucket == b)
                unused = int((bucket < 0).sum())
                if unused:
                    log.warning("data: %d of %d scenes of source %r fit no bucket of clip length %d", unused, len(bucket), name, frames)
            for b, grid in enumerate(grids):
                if not any(key[1] == b for key in members):
                    i = self.grids.index(grid)
                    raise ValueError(f"{bucket_key}[{i}] = {list(grid)} (views, frames, height, width) matches no scene of the sources "
                                     f"{sorted(metas)}: none has enough views and frames for it and a nearest aspect ratio")
            stages[frames] = (grids, members)
        return stages

    def _metas(self, name: str) -> list:
        """Metadata of every scene of source ``name`` (None for a corrupt one), read in parallel."""
        source = self.sources[name]

        def meta(i: int):
            try:
                return source.meta(i)
            except CorruptSampleError as e:
                log.warning("data: scene %d of source %r is corrupt and left out of the buckets (%s)", i, name, e)
                return None

        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(meta, range(len(source))))

    def _stage(self, frames: Optional[int]) -> tuple[list[Optional[Grid]], dict[tuple[int, int], np.ndarray], Optional[int]]:
        if self.grids is None:
            return [None], {(s, 0): np.arange(len(self.sources[n])) for s, n in enumerate(self.names)}, None
        if frames is None and len(self._stages) == 1:
            frames = next(iter(self._stages))
        if frames not in self._stages:
            raise ValueError(f"MixtureDataset: no bucket has {frames} frames (bucket clip lengths: {sorted(self._stages)})")
        return (*self._stages[frames], frames)

    # -------------------------------------------------------------------------------------- plan
    def _epoch_plan(self, frames: Optional[int], epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bucket ids, source ids and scene indices [epoch_size] of one epoch at clip length
        ``frames`` (the last few plans are cached)."""
        grids, members, stage = self._stage(frames)
        key = (stage, epoch)
        if key in self._plans:
            return self._plans[key]
        if len(self._plans) >= 4:
            self._plans.pop(next(iter(self._plans)))
        S, B, E = len(self.names), len(grids), self.epoch_size
        counts = np.zeros((S, B))
        for (s, b), scenes in members.items():
            counts[s, b] = len(scenes)
        totals = counts.sum(1, keepdims=True)
        weights = self.ratios[:, None] * counts / np.maximum(totals, 1)  # a source's ratio spread over its buckets by size
        rng = np.random.default_rng([self.seed, epoch] if stage is None else [self.seed, epoch, stage])
        bucket = np.zeros(E, dtype=np.int64)
        if B > 1:
            per_bucket = weights.sum(0)
            bucket = np.repeat(rng.choice(B, size=E // self.group_size, p=per_bucket / per_bucket.sum()), self.group_size)
        which = np.zeros(E, dtype=np.int64)
        for b in range(B):
            slots = np.flatnonzero(bucket == b)
            if len(slots):
                which[slots] = rng.choice(S, size=len(slots), p=weights[:, b] / weights[:, b].sum())
        index = np.zeros(E, dtype=np.int64)
        for (s, b), scenes in members.items():
            slots = np.flatnonzero((which == s) & (bucket == b))
            n = len(scenes)
            if len(slots):
                cycles = -(-len(slots) // n)
                order = np.concatenate([rng.permutation(n) for _ in range(cycles)])
                index[slots] = scenes[order[: len(slots)]]
        self._plans[key] = (bucket, which, index)
        return self._plans[key]

    def bucket_of(self, name: str, index: int, frames: int) -> Optional[Grid]:
        """The grid scene ``index`` of source ``name`` is trained at with clip length ``frames`` (None:
        it fits no bucket of that length). Needs buckets."""
        grids, members, stage = self._stage(frames)
        if stage not in self._buckets:
            self._buckets[stage] = {(s, int(i)): b for (s, b), scenes in members.items() for i in scenes}
        b = self._buckets[stage].get((self.names.index(name), index))
        return None if b is None else grids[b]

    def locate(self, position: int, frames: Optional[int] = None) -> tuple[str, int, Optional[Grid]]:
        """(source name, scene index, grid) of global ``position`` at clip length ``frames`` (only
        needed with buckets of several clip lengths)."""
        if position < 0:
            raise IndexError(f"MixtureDataset: position must be >= 0, got {position}")
        grids = self._stage(frames)[0]
        bucket, which, index = self._epoch_plan(frames, position // self.epoch_size)
        i = position % self.epoch_size
        return self.names[which[i]], int(index[i]), grids[bucket[i]]

    def sample(self, position: int, frames: Optional[int] = None, grid: Optional[Grid] = None) -> dict:
        """The sample at global ``position`` (at clip length ``frames``, see :meth:`locate`); without
        buckets, at ``grid`` (default: the source's own shape)."""
        name, index, bucket = self.locate(position, frames)
        grid = bucket or grid
        rng = np.random.default_rng([self.seed, position, 1])
        sample = self.sources[name].sample(index, rng, grid) if grid is not None else self.sources[name].sample(index, rng)
        reverse = bool(rng.random() < self.reverse_views_prob)
        if reverse:
            sample = reverse_views(sample)
        sample["source"] = name
        sample["views_reversed"] = reverse
        sample["grid"] = grid
        return sample

    def __getitem__(self, position: int) -> dict:
        return self.sample(position)
