"""Reconstruction loss of the Gaussian reconstructor: ``MSE + λ LPIPS`` (as Splatt3r; λ = 0.25 there).

LPIPS comes from the ``lpips`` package, built so that nothing is downloaded: its linear layers ship
with the package and are loaded here (``weights_only``); the ImageNet backbone (torchvision VGG16 or
AlexNet) is read from a file the user provides (``lpips_weights``, any fsspec URL) or, failing that,
from the torch hub cache (``$TORCH_HOME/hub/checkpoints/<torchvision file name>``) if it is already
there. Otherwise :class:`fourd.weights.WeightsNotFoundError` names the file to provide.
``random_backbone=True`` keeps a randomly initialised backbone (tests only: the values are then
not LPIPS).
"""
from __future__ import annotations

import os
import warnings
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fourd.weights import WeightsNotFoundError, read_state_dict

__all__ = ["BACKBONE_FILES", "backbone_cache_path", "build_lpips", "ReconstructionLoss"]

BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def backbone_cache_path(net: str) -> str:
    """Where torchvision would cache the ImageNet backbone of LPIPS ``net`` ("vgg" | "alex")."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", BACKBONE_FILES[net])


def _backbone_state(net: str, weights: Optional[str]) -> dict[str, torch.Tensor]:
    if weights is None:
        weights = backbone_cache_path(net)
        if not os.path.exists(weights):
            raise WeightsNotFoundError(
                f"LPIPS {net} backbone weights not found: pass lpips_weights=<path to {BACKBONE_FILES[net]}> "
                f"(torchvision ImageNet state dict; in the training configs: loss.lpips_weights=...), set the LPIPS "
                f"weight to 0 (loss.lpips_weight=0, MSE only) or place the file at {weights}; nothing is downloaded at run time"
            )
    return read_state_dict(weights, what=f"LPIPS {net} backbone weights ({BACKBONE_FILES[net]})")


def build_lpips(net: str = "vgg", backbone_weights: Optional[str] = None, random_backbone: bool = False) -> nn.Module:
    """An ``lpips.LPIPS`` module (eval mode, frozen) for images in [-1, 1] ``[B, 3, H, W]``.

    ``backbone_weights``: URL of the torchvision ImageNet state dict of the backbone
    (``features.*`` keys); None looks in the torch hub cache. ``random_backbone`` skips it.
    """
    import lpips

    if net not in BACKBONE_FILES:
        raise ValueError(f"lpips_net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
    source = None if random_backbone else _backbone_state(net, backbone_weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    linear_file = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{net}.pth")
    linear = read_state_dict(linear_file, what="LPIPS linear layers shipped with the lpips package")
    missing, unexpected = model.load_state_dict(linear, strict=False)
    missing_linear = [k for k in missing if k.startswith("lin") and not k.startswith("lins.")]
    if unexpected or missing_linear:
        raise RuntimeError(f"{linear_file} does not match lpips.LPIPS({net!r}): missing {missing_linear}, unexpected {unexpected}")
    if source is not None:
        state = {}
        for key in model.net.state_dict():
            index_and_param = key.split(".", 1)[1]
            tv_key = f"features.{index_and_param}"
            if tv_key not in source:
                raise RuntimeError(f"LPIPS {net} backbone file lacks {tv_key}: is it the torchvision {BACKBONE_FILES[net]}?")
            state[key] = source[tv_key]
        model.net.load_state_dict(state)
    model.eval()
    model.requires_grad_(False)
    return model


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
