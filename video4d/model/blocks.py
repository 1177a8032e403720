"""One Wan2.1 DiT block (with the 4D attention variants) and the output head.

Block (official order): gated self-attention on ``norm1(x)`` modulated by (shift, scale, gate);
ungated cross-attention on ``norm3(x)`` (affine, no modulation); gated FFN on modulated
``norm2(x)``. The six modulation vectors are ``blocks.i.modulation`` ``[1, 6, dim]`` plus the
projected time embedding, all in float32; the residual stream is float32.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from video4d.grid import GridShape
from video4d.model.config import DiTConfig
from video4d.model.layers import CrossAttention, FP32LayerNorm, SelfAttention, feed_forward, linear_fp32
from video4d.model.rope import RopeCache
from video4d.model.variants import SINGLE_ATTENTION_PATTERN, BlendSync, LinearSync

__all__ = ["DiTBlock", "Head", "modulate"]


def modulate(normed: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``normed * (1 + scale) + shift`` in float32; ``[B, N, dim]`` with ``[B, 1, dim]`` vectors."""
    return normed.float() * (1 + scale) + shift


class DiTBlock(nn.Module):
    """A Wan2.1 attention block over the tokens of a 4D grid.

    ``forward(x [B, N, dim] float32, e0 [B, 6, dim] float32, context [B, L, dim], grid, rope, sp=None)
    -> [B, N, dim] float32``. The self-attention step follows ``config.attention_variant``
    (see :mod:`video4d.model.variants`), which may add ``cross_view_attn`` or ``sync``. With a
    :class:`~video4d.model.sequence_parallel.SequenceParallel` ``sp``, ``x`` and ``rope`` hold this
    rank's share of the grid's tokens: every attention goes over the whole grid through ``sp``'s
    all-to-alls; the norms, cross-attention, FFN and modulation are per token and stay local.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        dim, eps = config.dim, config.eps
        self.variant = config.attention_variant
        self.backend = config.attention_backend
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, config.num_heads, eps)
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(dim, config.num_heads, eps)
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = feed_forward(dim, config.ffn_dim)
        if self.variant == "sequential":
            self.cross_view_attn = SelfAttention(dim, config.num_heads, eps)
        elif self.variant == "parallel_blend":
            self.sync = BlendSync()
        elif self.variant == "parallel_linear":
            self.sync = LinearSync(dim)

    def new_layers(self) -> list[nn.Module]:
        """The layers this block's variant adds to the official block (possibly none)."""
        return [m for m in (getattr(self, "cross_view_attn", None), getattr(self, "sync", None)) if m is not None]

    def _attention_step(self, x, shift, scale, gate, grid: GridShape, rope: RopeCache, sp) -> torch.Tensor:
        dtype = self.self_attn.q.weight.dtype
        h = modulate(self.norm1(x), shift, scale).to(dtype)
        if self.variant in SINGLE_ATTENTION_PATTERN:
            return x + self.self_attn(h, grid, rope, SINGLE_ATTENTION_PATTERN[self.variant], self.backend, sp) * gate
        if self.variant == "sequential":
            x = x + self.self_attn(h, grid, rope, "view", self.backend, sp) * gate
            h = modulate(self.norm1(x), shift, scale).to(dtype)
            return x + self.cross_view_attn(h, grid, rope, "time", self.backend, sp) * gate
        q, k, v = self.self_attn.qkv(h, rope)
        per_view = self.self_attn.o(self.self_attn.mix(q, k, v, grid, "view", self.backend, sp))
        per_time = self.self_attn.o(self.self_attn.mix(q, k, v, grid, "time", self.backend, sp))
        return x + self.sync(per_view, per_time) * gate

    def forward(self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, grid: GridShape, rope: RopeCache, sp=None) -> torch.Tensor:
        dtype = self.self_attn.q.weight.dtype
        e = (self.modulation.float() + e0).chunk(6, dim=1)
        x = self._attention_step(x, e[0], e[1], e[2], grid, rope, sp)
        x = x + self.cross_attn(self.norm3(x).to(dtype), context)
        return x + self.ffn(modulate(self.norm2(x), e[3], e[4]).to(dtype)) * e[5]


class Head(nn.Module):
    """Output head: ``LayerNorm`` (no affine) modulated by ``modulation`` ``[1, 2, dim]`` + the time
    embedding (shift, scale), then ``head`` Linear(dim -> prod(patch) * out_dim), all in float32.

    ``forward(x [B, N, dim], e [B, dim]) -> [B, N, prod(patch) * out_dim]`` float32.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        dim = config.dim
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        self.norm = FP32LayerNorm(dim, config.eps, elementwise_affine=False)
        self.head = nn.Linear(dim, config.patch_volume * config.out_dim)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.float() + e.float()[:, None]).chunk(2, dim=1)
        return linear_fp32(self.head, modulate(self.norm(x), shift, scale))
