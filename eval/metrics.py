"""Image metrics for reconstruction quality: PSNR, SSIM and LPIPS, per image.

All take ``pred`` and ``target`` images ``[B, 3, H, W]`` in [0, 1] and return one value per image
``[B]`` (average them over a dataset yourself). SSIM follows Wang et al. 2004 as commonly evaluated
(and as ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)``): an 11x11 Gaussian window with sigma 1.5, ``K1 = 0.01``,
``K2 = 0.03``, statistics over the valid (unpadded) window positions, averaged over positions and
channels. LPIPS reuses :func:`recon.losses.build_lpips` (local backbone weights only; "vgg" by
default, as in the feedforward-reconstruction literature).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from recon.losses import build_lpips

__all__ = ["psnr", "ssim", "lpips"]


def _check_pair(name: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"{name}: pred and target must both be [B, C, H, W], got {list(pred.shape)} and {list(target.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: ``10 log10(data_range² / MSE)`` -> ``[B]`` (inf if equal)."""
    _check_pair("psnr", pred, target)
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).to(pred.dtype)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per image ``[B]`` (1 for identical images); images at least ``window_size`` wide."""
    _check_pair("ssim", pred, target)
    B, C, H, W = pred.shape
    if min(H, W) < window_size:
        raise ValueError(f"ssim: images {H}x{W} are smaller than the {window_size}x{window_size} window")
    x, y = pred.double(), target.double()
    w = _gaussian_window(window_size, sigma, x.dtype, x.device)
    kernel_h = w.view(1, 1, 1, -1).expand(C, 1, 1, window_size)
    kernel_v = w.view(1, 1, -1, 1).expand(C, 1, window_size, 1)

    def blur(img: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(img, kernel_h, groups=C), kernel_v, groups=C)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1).to(pred.dtype)


_LPIPS_MODELS: dict[tuple, torch.nn.Module] = {}


def lpips(
    pred: torch.Tensor,
    target: torch.Tensor,
    net: str = "vgg",
    weights: Optional[str] = None,
    random_backbone: bool = False,
) -> torch.Tensor:
    """LPIPS distance per image ``[B]`` (lower is better; 0 for identical images).

    ``weights``: URL of the torchvision backbone state dict (see :mod:`recon.losses`); None looks in
    the torch hub cache. ``random_backbone`` is for tests. Models are built once per
    (net, weights, random_backbone, device) and kept.
    """
    _check_pair("lpips", pred, target)
    key = (net, weights, random_backbone, pred.device)
    if key not in _LPIPS_MODELS:
        _LPIPS_MODELS[key] = build_lpips(net, weights, random_backbone).to(pred.device)
    with torch.no_grad():
        return _LPIPS_MODELS[key](pred.float(), target.float(), normalize=True).flatten(1).mean(1).to(pred.dtype)
