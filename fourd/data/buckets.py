"""Grid buckets: scenes grouped by the grid shape (views, frames, height, width) they are trained at.

A bucket is a :class:`Grid`. The buckets of one clip length ``F`` (the grids whose ``frames == F``)
form a *stage*: with a progressive schedule (the paper: 8 x 29 at 144x256, then 8 x 61) each step
draws from the stage of its clip length. Within a stage every scene goes to at most one bucket
(:func:`assign`): among the grids its source can fill from it (enough views, frames, trajectory
frames: ``source.fits(meta, grid)``), the one whose aspect ratio is nearest to the scene's
(``|log((H/W) / (h/w))|``; ties: the first listed). A scene that fits no grid of a stage is not
drawn in that stage. :class:`fourd.data.MixtureDataset` then draws one bucket per micro-batch (so a
batch never mixes shapes) in proportion to the bucket's size, as finetrainers' and Lhotse's
bucketing samplers do.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

__all__ = ["Grid", "parse_grids", "assign"]


class Grid(NamedTuple):
    """A sample's grid shape: ``views`` x ``frames`` at ``height`` x ``width`` pixels."""

    views: int
    frames: int
    height: int
    width: int


def parse_grids(spec: Optional[Sequence[Any]], key: str = "data.buckets") -> Optional[list[Grid]]:
    """Grids from a config list of ``[views, frames, height, width]`` (or mappings with those keys);
    None stays None. Raises ``ValueError`` naming ``key[i]`` for a malformed or repeated entry."""
    if spec is None:
        return None
    if not len(spec):
        raise ValueError(f"{key} is empty: list grids [views, frames, height, width] or set it to null")
    grids = []
    for i, item in enumerate(spec):
        try:
            values = [item[k] for k in Grid._fields] if hasattr(item, "keys") else list(item)
            grid = Grid(*(int(v) for v in values))
        except (TypeError, ValueError, KeyError):
            raise ValueError(f"{key}[{i}] = {item!r} is not [views, frames, height, width]") from None
        if min(grid) < 1:
            raise ValueError(f"{key}[{i}] = {list(grid)}: every size must be positive")
        if grid in grids:
            raise ValueError(f"{key}[{i}] = {list(grid)} is listed twice")
        grids.append(grid)
    return grids


def assign(metas: Sequence[Any], grids: Sequence[Grid], fits: Callable[[Any, Grid], bool]) -> list[int]:
    """For each scene meta (with ``height`` and ``width``) the index into ``grids`` of its bucket
    (module docstring), or -1 when it fits none. ``grids`` are the grids of one stage."""
    out = []
    for meta in metas:
        best, distance = -1, math.inf
        for b, grid in enumerate(grids):
            if meta is None or not fits(meta, grid):
                continue
            d = abs(math.log((meta.height / meta.width) / (grid.height / grid.width)))
            if d < distance - 1e-12:
                best, distance = b, d
        out.append(best)
    return out
