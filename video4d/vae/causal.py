"""Causal 3D convolution with a streaming feature cache.

Tensors are channel-first videos ``[N, C, T, H, W]``. A causal convolution pads only the past:
output frame ``t`` depends on input frames ``<= t``. Feeding a video in consecutive chunks
through one :class:`CausalCache` gives the same result as one pass over the whole video with a
fresh cache, while only the last ``kernel_t - 1`` input frames of every layer are kept.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CausalCache", "CausalConv3d"]


class CausalCache:
    """Per-layer state of a streaming (chunked) causal pass.

    Layers keep what they need from earlier chunks under their own identity: past input frames
    ``[N, C, k, H, W]`` for convolutions, a flag for layers that treat the very first frame apart.
    Use one cache per video batch and per direction (encoder or decoder); a fresh cache starts a new video.
    Memory stays bounded in the number of chunks only without autograd (``torch.no_grad()``).
    """

    def __init__(self) -> None:
        self._state: dict[int, torch.Tensor] = {}
        self._started: set[int] = set()

    def get(self, layer: nn.Module) -> Optional[torch.Tensor]:
        """State stored by ``layer`` after the previous chunk, or None on the first chunk."""
        return self._state.get(id(layer))

    def put(self, layer: nn.Module, value: torch.Tensor) -> None:
        """Store ``layer``'s state for the next chunk (not detached: gradients flow across chunks)."""
        self._state[id(layer)] = value

    def first_call(self, layer: nn.Module) -> bool:
        """True the first time ``layer`` asks (its first chunk), False afterwards."""
        key = id(layer)
        if key in self._started:
            return False
        self._started.add(key)
        return True


class CausalConv3d(nn.Conv3d):
    """3D convolution, stride 1 in time, zero-padded only in the past along time.

    Spatial padding is symmetric ``(kernel - 1) / 2`` (odd kernels). ``forward(x [N, Cin, T, H, W],
    cache) -> [N, Cout, T, H, W]``. With a cache the past context comes from the previous chunk
    (zeros before the first frame), so chunked and one-shot passes agree exactly.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int]) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=0)
        kt, kh, kw = self.kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"CausalConv3d needs odd spatial kernels, got {self.kernel_size}")
        self.context = kt - 1
        self._spatial_pad = (kw // 2, kw // 2, kh // 2, kh // 2)

    def forward(self, x: torch.Tensor, cache: Optional[CausalCache] = None) -> torch.Tensor:
        if self.context > 0:
            past = cache.get(self) if cache is not None else None
            if past is None:
                past = x.new_zeros(*x.shape[:2], self.context, *x.shape[3:])
            x = torch.cat([past, x], dim=2)
            if cache is not None:
                cache.put(self, x[:, :, -self.context :])
        if any(self._spatial_pad):
            x = F.pad(x, self._spatial_pad)
        return super().forward(x)
