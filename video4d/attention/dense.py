"""Reference backends: SDPA with a dense boolean ``N x N`` mask, and unmasked SDPA."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from video4d.attention.masks import check_pattern, dense_mask
from video4d.grid import GridShape

__all__ = ["dense_attention", "full_attention"]


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unmasked attention: ``q, k, v [B, N, H, D]`` -> ``[B, N, H, D]``."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: GridShape, pattern: str = "view_or_time") -> torch.Tensor:
    """Masked attention with a materialised bool ``[N, N]`` mask (the reference): ``[B, N, H, D]`` in and out."""
    check_pattern(pattern)
    if pattern == "full":
        return full_attention(q, k, v)
    mask = dense_mask(grid, pattern, q.device)
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask).transpose(1, 2)
