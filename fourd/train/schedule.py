"""Learning-rate and progressive-training schedules, as pure functions of the optimizer step."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

__all__ = ["LR_SCHEDULES", "warmup_cosine", "warmup_constant", "build_lr_scheduler", "StepSchedule"]

LR_SCHEDULES = ("cosine", "constant")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): linear warm-up, then cosine decay.

    Warm-up: ``(step + 1) / warmup_steps`` for ``step < warmup_steps`` (the first step already
    trains). Then cosine from 1 down to ``min_ratio`` at ``total_steps``; constant ``min_ratio``
    after. ``total_steps <= warmup_steps`` gives a constant 1 after warm-up.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_constant(step: int, warmup_steps: int) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): linear warm-up ``(step + 1) / warmup_steps``,
    then a constant 1 (the paper's 4D fine-tuning schedule: "a warm-up schedule", App. B)."""
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def build_lr_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0,
                       schedule: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_cosine` (``schedule="cosine"``) or :func:`warmup_constant`
    (``"constant"``) to every parameter group's base LR.

    Stepped once per applied optimizer step (skipped steps do not advance it).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown LR schedule {schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_constant(s, warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps, min_ratio))


class StepSchedule:
    """A piecewise-constant value over training steps, e.g. frames per clip ``[[0, 29], [4000, 61]]``.

    ``points``: ``[[start_step, value], ...]`` with strictly increasing start steps, the first at 0.
    """

    def __init__(self, points: Sequence[Sequence[Any]]):
        points = [(int(p[0]), p[1]) for p in points]
        if not points or points[0][0] != 0:
            raise ValueError(f"a step schedule must start at step 0, got {points}")
        if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
            raise ValueError(f"step schedule start steps must increase strictly, got {points}")
        self.points = points

    def __call__(self, step: int) -> Any:
        """The value in force at ``step``."""
        value = self.points[0][1]
        for start, v in self.points:
            if step >= start:
                value = v
        return value
