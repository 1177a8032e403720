"""Transformer blocks of the aggregator: timm's ``Block`` with q/k LayerNorm and 2D RoPE.

Key names equal VGGT's (``norm1``, ``attn.qkv``, ``attn.q_norm``, ``attn.k_norm``, ``attn.proj``,
``ls1.gamma``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``, ``ls2.gamma``). Facts: LayerNorm eps 1e-5 (also
for q/k norms), qkv with bias, exact GELU, LayerScale, scaled-dot-product attention.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torch import nn

from fourd.sharded import gathered

from .rope2d import apply_rope

__all__ = ["RopeAttention", "RopeBlock", "zero_init_block"]

RopeTables = Optional[tuple[torch.Tensor, torch.Tensor]]


class RopeAttention(Attention):
    """timm ``Attention`` whose forward applies q/k norm then 2D RoPE (when tables are given)."""

    def forward(self, x: torch.Tensor, rope: RopeTables = None) -> torch.Tensor:  # type: ignore[override]
        """``x`` ``[B, N, C]``; ``rope`` = ``(cos, sin)`` each ``[N, head_dim]`` or None. Returns ``[B, N, C]``."""
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, self.attn_dim))


class RopeBlock(Block):
    """Pre-norm transformer block (VGGT frame/global block) taking RoPE tables.

    Args:
        dim: channels ``C``. num_heads: heads. mlp_ratio: MLP hidden = ``dim * mlp_ratio``.
        init_values: LayerScale init (VGGT 0.01). qk_norm: LayerNorm on per-head q and k.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, init_values: float = 0.01, qk_norm: bool = True) -> None:
        super().__init__(
            dim,
            num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            qk_norm=qk_norm,
            init_values=init_values,
            norm_layer=nn.LayerNorm,
            attn_layer=RopeAttention,
        )

    def forward(self, x: torch.Tensor, rope: RopeTables = None) -> torch.Tensor:  # type: ignore[override]
        """``x`` ``[B, N, C]`` -> ``[B, N, C]``; ``rope`` as in :meth:`RopeAttention.forward`."""
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


@torch.no_grad()
def zero_init_block(block: RopeBlock) -> None:
    """Make ``block`` an exact identity map by zeroing both output projections (attention and MLP).

    (A block built with LayerScale init 0 has *no* LayerScale, so that is not a way to zero it.)
    Gradients still reach the zeroed projections, so the block starts learning at once.
    """
    for linear in (block.attn.proj, block.mlp.fc2):
        with gathered(linear.parameters()):  # under ZeRO-3 construction the layers are partitioned already
            linear.weight.zero_()
            linear.bias.zero_()
