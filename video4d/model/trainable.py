"""Parameter-efficient fine-tuning: choose which DiT parameters train (the paper trains only
self-attention; the variants' new layers train too)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch.nn as nn

from fourd.sharded import numel

__all__ = ["DEFAULT_TRAINABLE", "TrainableCounts", "select_trainable", "matches"]

DEFAULT_TRAINABLE = ("self_attn", "cross_view_attn", "sync")


@dataclass(frozen=True)
class TrainableCounts:
    """Result of :func:`select_trainable`: element counts (not tensors) of trainable and frozen
    parameters, and how many elements each pattern selected."""

    trainable: int
    frozen: int
    per_pattern: dict[str, int]


def matches(name: str, pattern: str) -> bool:
    """True when ``pattern`` is a run of whole dotted components of the parameter ``name``.

    ``"self_attn"`` matches ``blocks.3.self_attn.q.weight`` (q, k, v, o, norm_q, norm_k of every
    block) but not ``blocks.3.cross_view_attn.q.weight``; ``"blocks.0.ffn"`` matches block 0's FFN;
    ``"*"`` matches every parameter (pretraining).
    """
    return pattern == "*" or f".{pattern}." in f".{name}."


def select_trainable(model: nn.Module, patterns: Sequence[str] = DEFAULT_TRAINABLE) -> TrainableCounts:
    """Set ``requires_grad`` to True exactly for the parameters whose names match one of ``patterns``
    (see :func:`matches`) and False for all others. Default: every block's self-attention plus the
    new variant layers (``cross_view_attn``, ``sync``). Raises if nothing matches (a typo).
    """
    patterns = tuple(patterns)
    per_pattern = {p: 0 for p in patterns}
    trainable = frozen = 0
    for name, param in model.named_parameters():
        hits = [p for p in patterns if matches(name, p)]
        param.requires_grad_(bool(hits))
        for p in hits:
            per_pattern[p] += numel(param)
        if hits:
            trainable += numel(param)
        else:
            frozen += numel(param)
    if trainable == 0:
        raise ValueError(f"no parameter name matches any of {list(patterns)}")
    return TrainableCounts(trainable=trainable, frozen=frozen, per_pattern=per_pattern)
