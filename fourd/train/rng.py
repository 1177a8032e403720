"""Capture and restore every random number generator of one process (one rank).

A state is a dict of tensors, ints and tuples only, so it round-trips through
``torch.save`` / ``torch.load(weights_only=True)``. Each rank saves and restores its own state.
"""
from __future__ import annotations

import random
from typing import Any, Mapping, Optional

import numpy as np
import torch

__all__ = ["capture_rng", "restore_rng", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU and all CUDA devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(generators: Optional[Mapping[str, torch.Generator]] = None) -> dict[str, Any]:
    """Snapshot python, numpy, torch CPU, all CUDA device RNGs and the named ``generators``.

    Returns ``{"python": tuple, "numpy": {...}, "torch": uint8 tensor, "cuda": [uint8 tensor],
    "generators": {name: uint8 tensor}}``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def restore_rng(state: Mapping[str, Any], generators: Optional[Mapping[str, torch.Generator]] = None) -> None:
    """Restore a snapshot from :func:`capture_rng` (into the same named ``generators``).

    Raises ``KeyError`` naming a generator missing from the snapshot.
    """
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        if name not in state["generators"]:
            raise KeyError(f"RNG snapshot has no generator {name!r} (has {sorted(state['generators'])})")
        g.set_state(state["generators"][name])


def _as_tuple(x: Any) -> Any:
    """Lists -> tuples recursively (python's RNG state must be made of tuples)."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
