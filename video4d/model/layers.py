"""Wan2.1 building blocks: fp32 norms, RoPE self-attention over the 4D grid, cross-attention, FFN.

Parameter names follow the official ``WanModel`` (``q``, ``k``, ``v``, ``o``, ``norm_q``,
``norm_k``; FFN ``0`` and ``2``) so that state dicts match key for key.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from video4d.attention import attend
from video4d.grid import GridShape
from video4d.model.rope import RopeCache, apply_rope

__all__ = ["RMSNorm", "FP32LayerNorm", "SelfAttention", "CrossAttention", "feed_forward", "linear_fp32"]


def linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` computed in float32 whatever the parameter dtype or autocast state: ``[..., in] -> [..., out]``."""
    with torch.autocast(x.device.type, enabled=False):
        bias = None if layer.bias is None else layer.bias.float()
        return F.linear(x.float(), layer.weight.float(), bias)


class RMSNorm(nn.Module):
    """RMS norm over the last dim (computed in float32, rounded back to the input dtype, then scaled
    by ``weight`` ``[dim]``). ``[..., dim] -> [..., dim]``; the result has the promoted dtype of the
    input and the weight, as in Wan."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype: ``[..., dim] -> [..., dim]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            weight = None if self.weight is None else self.weight.float()
            bias = None if self.bias is None else self.bias.float()
            return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class _Attention(nn.Module):
    """q, k, v, o projections ``dim -> dim`` with RMSNorm over the whole dim for q and k."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1))


class SelfAttention(_Attention):
    """Self-attention over a 4D token grid: q/k RMS-normed then rotated by the 3D RoPE, masked by
    ``pattern`` through :func:`video4d.attention.attend`.

    Split into :meth:`qkv`, :meth:`mix` and the output projection ``o`` so that the parallel variants
    can attend twice with one projection.
    """

    def qkv(self, x: torch.Tensor, rope: RopeCache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` ``[B, N, dim]`` -> q, k, v ``[B, N, heads, head_dim]`` (q, k rotated; all in v's dtype)."""
        v = self._heads(self.v(x))
        q = apply_rope(self._heads(self.norm_q(self.q(x))), rope.cos, rope.sin).to(v.dtype)
        k = apply_rope(self._heads(self.norm_k(self.k(x))), rope.cos, rope.sin).to(v.dtype)
        return q, k, v

    @staticmethod
    def mix(q, k, v, grid: GridShape, pattern: str, backend: str, sp=None) -> torch.Tensor:
        """Attention of q, k, v ``[B, N, heads, head_dim]`` with ``pattern`` -> ``[B, N, dim]`` (before ``o``).

        ``sp``: a :class:`video4d.model.sequence_parallel.SequenceParallel` when the ``N`` tokens are
        this rank's share of the grid (attention over the whole grid through its all-to-alls)."""
        if sp is not None:
            return sp.attend(q, k, v, grid, pattern, backend).flatten(2)
        return attend(q, k, v, grid, pattern=pattern, backend=backend).flatten(2)

    def forward(self, x: torch.Tensor, grid: GridShape, rope: RopeCache, pattern: str, backend: str, sp=None) -> torch.Tensor:
        """``[B, N, dim]`` tokens of ``grid`` (this rank's share with ``sp``, see :meth:`mix`) -> ``[B, N, dim]``."""
        q, k, v = self.qkv(x, rope)
        return self.o(self.mix(q, k, v, grid, pattern, backend, sp))


class CrossAttention(_Attention):
    """Attention from the tokens to the text context (no RoPE, no mask): Wan's T2V cross-attention."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, N, dim]``, ``context`` ``[B, L, dim]`` (embedded text) -> ``[B, N, dim]``."""
        q = self._heads(self.norm_q(self.q(x)))
        k = self._heads(self.norm_k(self.k(context)))
        v = self._heads(self.v(context))
        q, k = q.to(v.dtype), k.to(v.dtype)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o(out.transpose(1, 2).flatten(2))


def feed_forward(dim: int, ffn_dim: int) -> nn.Sequential:
    """Wan's FFN ``Linear(dim, ffn_dim) - GELU(tanh) - Linear(ffn_dim, dim)`` (keys ``0`` and ``2``)."""
    return nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
