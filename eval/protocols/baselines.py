"""Trivial baselines that give every table its context (no model, no learning).

Generation (a ``[V, T]`` grid with a fixed-view reference row ``ref_view`` and a freeze-time
reference column ``ref_time``): every cell ``(v, t)`` is predicted by copying the nearest reference
frame, either of the **same view** (the freeze-time column: ``gt[v, ref_time]``) or of the **same
time** (the fixed-view row: ``gt[ref_view, t]``).

Novel-view synthesis (views ordered along the capture path; ``inputs`` are some of those indices):
a target view ``v`` is predicted by its **left** neighbouring input (the largest input index
``< v``; the nearest input when there is none), its **right** neighbouring input (smallest index
``> v``; likewise), the **mean of the two**, or the **mean of all inputs**, at the same timestep.
"""
from __future__ import annotations

import torch

__all__ = ["GENERATION_BASELINES", "NVS_BASELINES", "generation_baselines", "nvs_baselines", "neighbour_inputs"]

GENERATION_BASELINES = ("copy same view (freeze-time ref.)", "copy same time (fixed-view ref.)")
NVS_BASELINES = ("copy left input view", "copy right input view", "mean of the 2 neighbouring inputs", "mean of all inputs")


def generation_baselines(gt: torch.Tensor, ref_view: int = 0, ref_time: int = 0) -> dict[str, torch.Tensor]:
    """Copy baselines for a grid ``gt [V, T, 3, H, W]`` -> ``{name: prediction [V, T, 3, H, W]}``."""
    V, T = gt.shape[:2]
    same_view = gt[:, ref_time : ref_time + 1].expand(V, T, *gt.shape[2:])
    same_time = gt[ref_view : ref_view + 1].expand(V, T, *gt.shape[2:])
    return dict(zip(GENERATION_BASELINES, (same_view, same_time)))


def neighbour_inputs(target: int, inputs: list[int]) -> tuple[int, int]:
    """Positions (in ``inputs``) of the left and right neighbouring inputs of view index ``target``."""
    order = sorted(range(len(inputs)), key=lambda i: inputs[i])
    left = [i for i in order if inputs[i] < target]
    right = [i for i in order if inputs[i] > target]
    left_i = left[-1] if left else right[0]
    right_i = right[0] if right else left[-1]
    return left_i, right_i


def nvs_baselines(input_frames: torch.Tensor, inputs: list[int], targets: list[int]) -> dict[str, torch.Tensor]:
    """NVS baselines: ``input_frames [V_in, T, 3, H, W]`` of view indices ``inputs`` -> ``{name:
    prediction [V_tgt, T, 3, H, W]}`` for the view indices ``targets``."""
    if input_frames.shape[0] != len(inputs):
        raise ValueError(f"{input_frames.shape[0]} input views given for {len(inputs)} input indices")
    pairs = [neighbour_inputs(v, inputs) for v in targets]
    left = torch.stack([input_frames[a] for a, _ in pairs])
    right = torch.stack([input_frames[b] for _, b in pairs])
    mean_all = input_frames.mean(0, keepdim=True).expand(len(targets), *input_frames.shape[1:])
    return dict(zip(NVS_BASELINES, (left, right, (left + right) / 2, mean_all)))
