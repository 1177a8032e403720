"""Attention over a 4D token grid (placeholder: dense-mask reference only; the attention work replaces this).

``attend(q, k, v, grid, pattern, backend)``: q, k, v ``[B, N, H, D]`` in the view-major layout of
:class:`video4d.grid.GridShape`; returns ``[B, N, H, D]``.
Patterns: ``"full"`` (every token), ``"view_or_time"`` (same view OR same time: the fused 4D mask),
``"view"`` (same view only), ``"time"`` (same time only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from video4d.grid import GridShape


def _dense_mask(grid: GridShape, pattern: str, device) -> torch.Tensor | None:
    if pattern == "full":
        return None
    view, time = grid.token_view(device), grid.token_time(device)
    same_view = view[:, None] == view[None, :]
    same_time = time[:, None] == time[None, :]
    return {"view_or_time": same_view | same_time, "view": same_view, "time": same_time}[pattern]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: GridShape, pattern: str = "view_or_time", backend: str = "auto") -> torch.Tensor:
    """Masked attention on ``[B, N, H, D]`` tensors; see the module docstring."""
    mask = _dense_mask(grid, pattern, q.device)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)
