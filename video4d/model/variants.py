"""The five ways a block mixes tokens across views and times (the paper's Fig. 3).

Patterns are those of :func:`video4d.attention.attend`: "view" = same view (a per-view video
attention, what the base model was trained for), "time" = same time (a cross-view attention at one
timestep), "view_or_time" = the union, "full" = everything.

- ``fused`` (default): the pretrained self-attention with the "view_or_time" mask. No new parameters.
- ``full``: the pretrained self-attention over the whole grid (the video model on the flattened
  multi-view video). No new parameters.
- ``sequential``: the pretrained self-attention with "view", then a NEW attention layer
  ``blocks.i.cross_view_attn`` with "time", each a gated residual step that reuses the block's
  self-attention modulation (shift, scale, gate). Its output projection starts at zero, so the
  block initially equals the per-view video model.
- ``parallel_blend``: the pretrained self-attention run once with "view" and once with "time"
  (shared q, k, v), outputs blended as ``alpha * view + (1 - alpha) * time`` by a learned scalar
  ``blocks.i.sync.alpha``, initialised to 0.5 (SV4D 2.0 style).
- ``parallel_linear``: the same two branches concatenated ``[view, time]`` and merged by a linear
  layer ``blocks.i.sync`` (weight ``[dim, 2 dim]``, bias ``[dim]``) initialised to their average
  (weight ``[I/2, I/2]``, bias 0; 4Real-Video style).
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

__all__ = ["SINGLE_ATTENTION_PATTERN", "BlendSync", "LinearSync", "NEW_LAYER_KEY", "is_new_layer_key"]

SINGLE_ATTENTION_PATTERN = {"fused": "view_or_time", "full": "full"}

NEW_LAYER_KEY = re.compile(r"^blocks\.\d+\.(cross_view_attn|sync)\.")


def is_new_layer_key(key: str) -> bool:
    """True for state-dict keys of layers that the variants add to the official model."""
    return NEW_LAYER_KEY.match(key) is not None


class BlendSync(nn.Module):
    """``alpha * view + (1 - alpha) * time`` with a learned scalar ``alpha`` (init 0.5).

    Inputs and output ``[B, N, dim]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``alpha = 0.5``: the plain average of the two branches."""
        with torch.no_grad():
            self.alpha.fill_(0.5)

    def forward(self, view: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.float()
        return alpha * view + (1 - alpha) * time


class LinearSync(nn.Module):
    """``Linear(cat([view, time], -1))`` from ``2 * dim`` to ``dim`` channels, initialised to the average.

    Inputs and output ``[B, N, dim]``; parameters ``weight`` ``[dim, 2 dim]`` and ``bias`` ``[dim]``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, 2 * dim))
        self.bias = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weight ``[I/2, I/2]``, bias 0: the output starts as the average of the two branches."""
        dim = self.bias.shape[0]
        with torch.no_grad():
            eye = torch.eye(dim, dtype=self.weight.dtype, device=self.weight.device)
            self.weight.copy_(torch.cat((eye, eye), dim=1) * 0.5)
            self.bias.zero_()

    def forward(self, view: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(torch.cat((view, time), dim=-1), self.weight, self.bias)
