"""Building blocks of the Wan2.1 VAE: RMS norm, residual block, frame-wise attention, resampling.

All blocks take channel-first videos ``x [N, C, T, H, W]``; those with a temporal extent also take
an optional :class:`CausalCache` (``None`` = one pass over a whole video). Module and parameter names follow the official
checkpoint (``residual.0.gamma``, ``resample.1.weight``, ``time_conv.weight`` ...).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from video4d.vae.causal import CausalCache, CausalConv3d

__all__ = ["ChannelRMSNorm", "ResidualBlock", "AttentionBlock", "Downsample", "Upsample"]


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channel axis (dim 1): ``x / ||x||_2 * sqrt(C) * gamma``.

    ``spatial_dims``: axes after the channel axis (3 for videos ``[N, C, T, H, W]``, 2 for frames
    ``[N, C, H, W]``); ``gamma`` has shape ``[C, 1, ...]`` accordingly.
    """

    def __init__(self, dim: int, spatial_dims: int = 3) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *([1] * spatial_dims)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


def _framewise(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D ``module`` to every frame of ``x [N, C, T, H, W]``."""
    n = x.shape[0]
    y = module(rearrange(x, "n c t h w -> (n t) c h w"))
    return rearrange(y, "(n t) c h w -> n c t h w", n=n)


class ResidualBlock(nn.Module):
    """``x + F(x)`` with ``F`` = norm, SiLU, causal 3x3x3 conv, norm, SiLU, dropout, causal 3x3x3 conv.

    ``[N, in_dim, T, H, W] -> [N, out_dim, T, H, W]``; a 1x1x1 ``shortcut`` conv when the widths differ.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            ChannelRMSNorm(in_dim),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3),
            ChannelRMSNorm(out_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: Optional[CausalCache] = None) -> torch.Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention among the ``H * W`` positions of each frame (no mixing across time).

    ``[N, C, T, H, W] -> [N, C, T, H, W]``; residual, RMS-normed input, 1x1 conv projections.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = ChannelRMSNorm(dim, spatial_dims=2)
        self.to_qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[-2]
        qkv = rearrange(self.to_qkv(self.norm(x)), "b (three c) h w -> three b (h w) c", three=3)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(rearrange(out, "b (h w) c -> b c h w", h=height))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _framewise(self._attend, x)


class Downsample(nn.Module):
    """Halve H and W (zero pad right/bottom, 3x3 stride-2 conv); with ``temporal`` also halve time.

    Temporal halving keeps the first frame and then maps frames ``(2j-2, 2j-1, 2j)`` to output
    ``j`` (a stride-2 conv of 3 taps), so ``T = 1 + 2m -> 1 + m``. Chunked: the first chunk must
    have an odd number of frames and later chunks an even number.
    ``[N, C, T, H, W] -> [N, C, T', H/2, W/2]``.
    """

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, cache: Optional[CausalCache] = None) -> torch.Tensor:
        x = _framewise(self.resample, x)
        if self.time_conv is None:
            return x
        previous = cache.get(self) if cache is not None else None
        first = x[:, :, :1] if previous is None else x[:, :, :0]
        frames = x if previous is None else torch.cat([previous, x], dim=2)
        if frames.shape[2] % 2 != 1:
            raise ValueError(
                f"temporal downsampling got {x.shape[2]} frames: the first chunk needs an odd count, later chunks an even one"
            )
        if cache is not None:
            cache.put(self, frames[:, :, -1:])
        if frames.shape[2] == 1:
            return first
        return torch.cat([first, self.time_conv(frames)], dim=2)


class Upsample(nn.Module):
    """Double H and W (nearest, then a 3x3 conv to ``dim // 2`` channels); with ``temporal`` also
    double time except for the first frame: ``T -> 2T - 1``.

    The temporal step is a causal conv to ``2 * dim`` channels over frames ``1..T-1`` whose halves
    become two consecutive output frames; frame 0 passes through. ``[N, C, T, H, W] ->
    [N, C/2, T', 2H, 2W]``.
    """

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest-exact"), nn.Conv2d(dim, dim // 2, 3, padding=1))
        self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, cache: Optional[CausalCache] = None) -> torch.Tensor:
        if self.time_conv is not None:
            is_first = cache is None or cache.first_call(self)
            first, rest = (x[:, :, :1], x[:, :, 1:]) if is_first else (x[:, :, :0], x)
            if rest.shape[2] > 0:
                doubled = rearrange(self.time_conv(rest, cache), "n (two c) t h w -> n c (t two) h w", two=2)
                x = torch.cat([first, doubled], dim=2)
            else:
                x = first
        return _framewise(self.resample, x)
