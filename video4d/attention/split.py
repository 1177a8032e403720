"""Exact masked attention by splitting the grid into views, times and frames (CPU-capable, with backward).

The fused mask "same view OR same time" is the union of two block-diagonal masks (after
regrouping the tokens): attention within each view (``T * h * w`` keys), within each time step
(``V * h * w`` keys), whose intersection is the same frame (``h * w`` keys). With each branch's
output ``o_b`` and log-sum-exp ``l_b``, the attention over the union is exactly

    out = (e^{l_v} o_v + e^{l_t} o_t - e^{l_f} o_f) / (e^{l_v} + e^{l_t} - e^{l_f}),

computed after subtracting ``max(l_v, l_t)``. The backward reuses the merged output and
log-sum-exp in each branch (see :mod:`video4d.attention.kernels`) and combines the branch gradients
with the same signs. Memory grows with ``N * H * D`` (no score matrix is stored).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from video4d.attention.dense import full_attention
from video4d.attention.kernels import attention_backward, attention_with_lse
from video4d.attention.masks import check_pattern
from video4d.grid import GridShape

__all__ = ["split_attention"]


def _to_groups(x: torch.Tensor, grid: GridShape, by: str) -> torch.Tensor:
    """``[B, N, H, *rest]`` -> ``[G, H, L, *rest]`` grouped ``by`` "view", "time" or "frame"."""
    B, _, H, *rest = x.shape
    V, T, P = grid.V, grid.T, grid.tokens_per_frame
    if by == "view":
        grouped = x.reshape(B * V, T * P, H, *rest)
    elif by == "time":
        grouped = x.reshape(B, V, T, P, H, *rest).transpose(1, 2).reshape(B * T, V * P, H, *rest)
    else:
        grouped = x.reshape(B * V * T, P, H, *rest)
    return grouped.transpose(1, 2)


def _from_groups(y: torch.Tensor, grid: GridShape, by: str) -> torch.Tensor:
    """Inverse of :func:`_to_groups`: ``[G, H, L, *rest]`` -> ``[B, N, H, *rest]``."""
    G, H, _, *rest = y.shape
    y = y.transpose(1, 2)
    V, T, P = grid.V, grid.T, grid.tokens_per_frame
    if by == "time":
        B = G // T
        y = y.reshape(B, T, V, P, H, *rest).transpose(1, 2)
    else:
        B = G // V if by == "view" else G // (V * T)
    return y.reshape(B, grid.num_tokens, H, *rest)


_BRANCHES = (("view", 1.0), ("time", 1.0), ("frame", -1.0))


class _ViewOrTime(torch.autograd.Function):
    """Fused view-or-time attention on ``[B, N, H, D]`` (see the module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, grid: GridShape, impl: str):
        outs, lses = [], []
        for by, _ in _BRANCHES:
            o, lse = attention_with_lse(*(_to_groups(x, grid, by) for x in (q, k, v)), impl=impl)
            outs.append(_from_groups(o, grid, by))
            lses.append(_from_groups(lse, grid, by))
        top = torch.maximum(lses[0], lses[1])
        weights = [(lse - top).exp() for lse in lses]
        denom = weights[0] + weights[1] - weights[2]
        merged = sum(sign * w[..., None] * o.to(w.dtype) for (_, sign), w, o in zip(_BRANCHES, weights, outs))
        out = (merged / denom[..., None]).to(q.dtype)
        ctx.save_for_backward(q, k, v, out, top + denom.log())
        ctx.grid, ctx.impl = grid, impl
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        grads = [torch.zeros_like(x) for x in (q, k, v)]
        for by, sign in _BRANCHES:
            grouped = (_to_groups(x, ctx.grid, by) for x in (grad_out, q, k, v, out, lse))
            for total, g in zip(grads, attention_backward(*grouped, impl=ctx.impl)):
                total.add_(_from_groups(g, ctx.grid, by), alpha=sign)
        return grads[0], grads[1], grads[2], None, None


def _grouped_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: GridShape, by: str) -> torch.Tensor:
    out = F.scaled_dot_product_attention(*(_to_groups(x, grid, by) for x in (q, k, v)))
    return _from_groups(out, grid, by)


def split_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: GridShape, pattern: str = "view_or_time", impl: str = "auto") -> torch.Tensor:
    """Exact masked attention ``q, k, v [B, N, H, D]`` -> ``[B, N, H, D]`` without an ``N x N`` mask.

    ``pattern``: see :mod:`video4d.attention.masks`. "view" / "time" are batched SDPA over views /
    times; "view_or_time" merges view, time and frame branches (just full attention if V or T is 1).
    ``impl``: branch kernel for "view_or_time" ("auto": ATen's CPU flash kernels on CPU, else torch).
    """
    check_pattern(pattern)
    if pattern == "view_or_time" and min(grid.V, grid.T) == 1:
        pattern = "full"
    if pattern == "full":
        return full_attention(q, k, v)
    if pattern in ("view", "time"):
        return _grouped_sdpa(q, k, v, grid, pattern)
    return _ViewOrTime.apply(q, k, v, grid, impl)
