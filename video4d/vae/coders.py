"""Encoder and decoder stacks of the Wan2.1 causal 3D VAE.

Both map channel-first videos ``[N, C, T, H, W]`` and accept an optional :class:`CausalCache`
for chunked (streaming) passes. Submodule indices follow the official checkpoint
(``downsamples.N``, ``middle.{0,1,2}``, ``head.{0,2}``, ``upsamples.N``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from video4d.vae.blocks import AttentionBlock, ChannelRMSNorm, Downsample, ResidualBlock, Upsample
from video4d.vae.causal import CausalCache, CausalConv3d
from video4d.vae.config import VAEConfig

__all__ = ["Encoder3d", "Decoder3d"]


def _middle(dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim, dropout), AttentionBlock(dim), ResidualBlock(dim, dim, dropout))


def _head(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(ChannelRMSNorm(dim), nn.SiLU(), CausalConv3d(dim, out_dim, 3))


_STREAMING = (CausalConv3d, ResidualBlock, Downsample, Upsample)


def _run(layers: nn.Sequential, x: torch.Tensor, cache: Optional[CausalCache]) -> torch.Tensor:
    for layer in layers:
        x = layer(x, cache) if isinstance(layer, _STREAMING) else layer(x)
    return x


class Encoder3d(nn.Module):
    """Frames ``[N, 3, T, H, W]`` in [-1, 1] -> posterior parameters ``[N, 2 * z_dim, T', H/8, W/8]``
    (before the ``conv1`` projection), ``T' = (T - 1) / 4 + 1`` for the Wan2.1 config.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        dims = [config.dim * m for m in (1, *config.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3)
        stages: list[nn.Module] = []
        last = len(config.dim_mult) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(config.num_res_blocks):
                stages.append(ResidualBlock(in_dim, out_dim, config.dropout))
                in_dim = out_dim
            if i != last:
                stages.append(Downsample(out_dim, temporal=config.temporal_downsample[i]))
        self.downsamples = nn.Sequential(*stages)
        self.middle = _middle(dims[-1], config.dropout)
        self.head = _head(dims[-1], 2 * config.z_dim)

    def forward(self, x: torch.Tensor, cache: Optional[CausalCache] = None) -> torch.Tensor:
        x = self.conv1(x, cache)
        for part in (self.downsamples, self.middle, self.head):
            x = _run(part, x, cache)
        return x


class Decoder3d(nn.Module):
    """Latents ``[N, z_dim, T', h, w]`` (after the ``conv2`` projection) -> frames
    ``[N, 3, T, 8h, 8w]`` (unbounded; [-1, 1] after clamping), ``T = 4 (T' - 1) + 1`` for Wan2.1.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        mult = config.dim_mult
        dims = [config.dim * m for m in (mult[-1], *reversed(mult))]
        temporal_upsample = tuple(reversed(config.temporal_downsample))
        self.conv1 = CausalConv3d(config.z_dim, dims[0], 3)
        self.middle = _middle(dims[0], config.dropout)
        stages: list[nn.Module] = []
        last = len(mult) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # the previous Upsample halved the channels
            for _ in range(config.num_res_blocks + 1):
                stages.append(ResidualBlock(in_dim, out_dim, config.dropout))
                in_dim = out_dim
            if i != last:
                stages.append(Upsample(out_dim, temporal=temporal_upsample[i]))
        self.upsamples = nn.Sequential(*stages)
        self.head = _head(dims[-1], 3)

    def forward(self, x: torch.Tensor, cache: Optional[CausalCache] = None) -> torch.Tensor:
        x = self.conv1(x, cache)
        for part in (self.middle, self.upsamples, self.head):
            x = _run(part, x, cache)
        return x
