"""Reconstruction loss of the Gaussian reconstructor: ``MSE + λ LPIPS`` (as Splatt3r; λ = 0.25 there).

LPIPS is :func:`fourd.metrics.build_lpips` (nothing downloaded: the ``lpips`` package's linear layers
plus a torchvision backbone file, ``lpips_weights``, or the torch hub cache; a missing file is a
:class:`fourd.weights.WeightsNotFoundError` naming it). ``random_backbone=True`` keeps a randomly
initialised backbone (tests and demos only: the values are then not LPIPS).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fourd.metrics import build_lpips

__all__ = ["ReconstructionLoss"]


class ReconstructionLoss(nn.Module):
    """``loss = MSE(pred, target) + lpips_weight * LPIPS(pred, target)``.

    Args:
        lpips_weight: λ; 0 skips LPIPS entirely (no backbone needed).
        lpips_net: "vgg" (default, as Splatt3r) or "alex".
        lpips_weights: URL of the torchvision backbone state dict (see module docstring).
        random_backbone: use a random backbone (tests).
    ``forward(pred, target)`` takes images ``[B, 3, H, W]`` in [0, 1] and returns
    ``{"loss", "mse", "lpips"}`` scalar tensors (mean over the batch).
    """

    def __init__(
        self,
        lpips_weight: float = 0.25,
        lpips_net: str = "vgg",
        lpips_weights: Optional[str] = None,
        random_backbone: bool = False,
    ):
        super().__init__()
        self.lpips_weight = float(lpips_weight)
        self.lpips = build_lpips(lpips_net, lpips_weights, random_backbone) if self.lpips_weight > 0 else None

    def train(self, mode: bool = True) -> "ReconstructionLoss":
        """Keep LPIPS in eval mode (its linear layers carry dropout) whatever the parent's mode."""
        super().train(mode)
        if self.lpips is not None:
            self.lpips.eval()
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(f"ReconstructionLoss needs pred and target [B, 3, H, W] of one shape, got {list(pred.shape)} and {list(target.shape)}")
        mse = F.mse_loss(pred, target)
        if self.lpips is None:
            perceptual = mse.new_zeros(())
        else:
            perceptual = self.lpips(pred, target, normalize=True).mean()
        return {"loss": mse + self.lpips_weight * perceptual, "mse": mse, "lpips": perceptual}
