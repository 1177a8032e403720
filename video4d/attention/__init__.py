"""Attention over a 4D token grid: the fused view-time sparse attention and its ablation patterns.

``attend(q, k, v, grid, pattern, backend)``: q, k, v ``[B, N, H, D]`` in the view-major layout of
:class:`video4d.grid.GridShape` (``N = V * T * h * w``); returns ``[B, N, H, D]``.

Patterns (:mod:`video4d.attention.masks`): ``"full"`` (every token), ``"view_or_time"`` (same view
OR same time: the fused 4D mask), ``"view"`` (same view only), ``"time"`` (same time only).

Backends, all exact:

- ``"split"`` (:mod:`~video4d.attention.split`): view / time / frame branches merged through their
  log-sum-exp; forward and backward on any device, memory ``O(N * H * D)``.
- ``"flex"`` (:mod:`~video4d.attention.flex`): FlexAttention with a cached block mask; compiled on
  CUDA; forward-only on CPU.
- ``"dense"`` (:mod:`~video4d.attention.dense`): SDPA with a materialised ``N x N`` mask (reference).
- ``"auto"``: per device and grid, the backend a small cost model says is fastest
  (:mod:`~video4d.attention.auto`): on CPU split or dense, on CUDA flex or split.

Pattern ``"full"`` is plain unmasked SDPA for every backend except flex (unmasked flex).
"""
from __future__ import annotations

import torch

from video4d.attention.auto import choose_backend
from video4d.attention.dense import dense_attention, full_attention
from video4d.attention.flex import block_mask, choose_layout, flex_attention_grid
from video4d.attention.masks import PATTERNS, BlockLayout, SparsityReport, check_pattern, dense_mask, sparsity_report
from video4d.attention.split import split_attention
from video4d.grid import GridShape

__all__ = [
    "BACKENDS",
    "PATTERNS",
    "BlockLayout",
    "SparsityReport",
    "attend",
    "block_mask",
    "choose_backend",
    "choose_layout",
    "dense_mask",
    "resolve_backend",
    "sparsity_report",
]

BACKENDS = ("auto", "split", "flex", "dense")


def resolve_backend(
    backend: str,
    device: torch.device | str,
    grid: GridShape | None = None,
    pattern: str = "view_or_time",
    training: bool = True,
) -> str:
    """The concrete backend that ``backend`` means on ``device`` for ``pattern`` on ``grid``.

    "auto": :func:`~video4d.attention.auto.choose_backend` (forward + backward costs when
    ``training``); without a grid, "flex" on CUDA and "split" elsewhere.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    device_type = torch.device(device).type
    if grid is None:
        return "flex" if device_type == "cuda" else "split"
    return choose_backend(device_type, grid, pattern, training)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: GridShape) -> None:
    if q.dim() != 4:
        raise ValueError(f"attention expects q, k, v as [B, N, heads, head_dim], got q of shape {list(q.shape)}")
    if q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v shapes differ: {list(q.shape)}, {list(k.shape)}, {list(v.shape)}")
    if q.shape[1] != grid.num_tokens:
        raise ValueError(
            f"sequence length {q.shape[1]} does not match {grid} ({grid.num_tokens} tokens = V*T*h*w)"
        )


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grid: GridShape,
    pattern: str = "view_or_time",
    backend: str = "auto",
) -> torch.Tensor:
    """Masked attention ``q, k, v [B, N, H, D]`` -> ``[B, N, H, D]`` (softmax scale ``D ** -0.5``).

    Raises ``ValueError`` for a sequence length other than ``grid.num_tokens``, an unknown pattern
    or backend, or flex with gradients on CPU.
    """
    check_pattern(pattern)
    _check_inputs(q, k, v, grid)
    training = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    backend = resolve_backend(backend, q.device, grid, pattern, training)
    if backend == "flex":
        return flex_attention_grid(q, k, v, grid, pattern)
    if pattern == "full":
        return full_attention(q, k, v)
    if backend == "dense":
        return dense_attention(q, k, v, grid, pattern)
    return split_attention(q, k, v, grid, pattern)
