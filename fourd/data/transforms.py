"""Resize + crop of multi-view clips with matching intrinsics and depth, and view-order reversal."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ResizeCrop", "reverse_views"]


@dataclass(frozen=True)
class ResizeCrop:
    """Resize an image of ``in_size`` (H, W) to ``resized`` (aspect kept, covering ``out_size``),
    then crop ``out_size`` at (``top``, ``left``). One plan is shared by all frames of a sample.

    Pixel coordinates are continuous with pixel ``(i, j)`` covering ``[j, j+1] x [i, i+1]``, so the
    intrinsics transform exactly as ``fx, cx *= sx``; ``fy, cy *= sy``; ``cx -= left``; ``cy -= top``.
    """

    in_size: tuple[int, int]
    out_size: tuple[int, int]
    resized: tuple[int, int]
    top: int
    left: int

    @classmethod
    def plan(cls, in_size: tuple[int, int], out_size: tuple[int, int], crop: str = "center",
             rng: Optional[np.random.Generator] = None) -> "ResizeCrop":
        """Plan for ``crop`` "center" or "random" (needs ``rng``); sizes are (H, W) in pixels."""
        (H, W), (h, w) = in_size, out_size
        scale = max(h / H, w / W)
        rh, rw = max(h, round(H * scale)), max(w, round(W * scale))
        if crop == "center":
            top, left = (rh - h) // 2, (rw - w) // 2
        elif crop == "random":
            if rng is None:
                raise ValueError("ResizeCrop.plan: crop='random' needs an rng")
            top, left = int(rng.integers(0, rh - h + 1)), int(rng.integers(0, rw - w + 1))
        else:
            raise ValueError(f"ResizeCrop.plan: crop must be 'center' or 'random', got {crop!r}")
        return cls((H, W), (h, w), (rh, rw), top, left)

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.out_size
        return x[..., self.top : self.top + h, self.left : self.left + w]

    def frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Images [..., C, H, W] -> [..., C, h, w] (bilinear, antialiased when shrinking)."""
        lead = frames.shape[:-3]
        x = frames.reshape(-1, *frames.shape[-3:])
        if self.resized != self.in_size:
            x = F.interpolate(x, size=self.resized, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        return self._crop(x).reshape(*lead, x.shape[-3], *self.out_size).contiguous()

    def depth(self, depth: torch.Tensor) -> torch.Tensor:
        """Depth maps [..., H, W] -> [..., h, w] (nearest, so edges never blend foreground and background)."""
        lead = depth.shape[:-2]
        x = depth.reshape(-1, 1, *depth.shape[-2:])
        if self.resized != self.in_size:
            x = F.interpolate(x, size=self.resized, mode="nearest-exact")
        return self._crop(x).reshape(*lead, *self.out_size).contiguous()

    def intrinsics(self, K: torch.Tensor) -> torch.Tensor:
        """Pixel intrinsics [..., 3, 3] of the input -> those of the output."""
        sy, sx = self.resized[0] / self.in_size[0], self.resized[1] / self.in_size[1]
        K = K.clone()
        K[..., 0, :] *= sx
        K[..., 1, :] *= sy
        K[..., 0, 2] -= self.left
        K[..., 1, 2] -= self.top
        return K


def reverse_views(sample: dict) -> dict:
    """Reverse the view order (dim 0) of those of ``frames`` [V, T, 3, H, W], ``latents`` [V, T', C,
    h, w], ``cameras`` tensors and ``depth`` [V, T, H, W] that a sample has; other entries are kept.
    Returns a new dict."""
    out = dict(sample)
    for key in ("frames", "latents", "depth"):
        if key in sample:
            out[key] = sample[key].flip(0)
    if "cameras" in sample:
        out["cameras"] = {k: v.flip(0) for k, v in sample["cameras"].items()}
    return out
