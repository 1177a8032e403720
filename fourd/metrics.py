"""Image metrics shared by training and evaluation: PSNR, SSIM, LPIPS (and the LPIPS network builder).

They live here, below both the model packages (``recon`` logs PSNR/SSIM and trains with LPIPS) and
``eval`` (benchmarks), so no model package imports ``eval``.

All metric functions take ``pred`` and ``target`` images ``[B, 3, H, W]`` in [0, 1] and return one
value per image ``[B]`` (average them over a dataset yourself).

* PSNR: ``10 log10(data_range² / MSE)`` in dB.
* SSIM: Wang et al. 2004 as commonly evaluated (and as ``skimage.metrics.structural_similarity(
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``): an 11x11 Gaussian
  window with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, statistics over the valid (unpadded) window
  positions, averaged over positions and channels.
* LPIPS (Zhang et al. 2018, v0.1) from the ``lpips`` package, built so that nothing is downloaded:
  its linear layers ship inside the ``lpips`` wheel (``lpips/weights/v0.1/<net>.pth``) and are read
  with ``weights_only``; the ImageNet backbone (torchvision VGG16 ``vgg16-397923af.pth`` or AlexNet
  ``alexnet-owt-7be5be79.pth``, a ``torch.save`` state dict with ``features.*`` keys) is read from a
  file the caller names (any fsspec URL) or, failing that, from the torch hub cache
  (``$TORCH_HOME/hub/checkpoints/<file name>``). Otherwise :class:`fourd.weights.WeightsNotFoundError`
  names the file to provide. "vgg" is the default, as in the feedforward-reconstruction literature.

**Random backbones are never reportable.** ``random_backbone=True`` (tests and demos only) builds
LPIPS with a randomly initialised backbone; :func:`lpips` then returns an
:class:`UnreportableTensor`: it computes like a tensor (and stays one through ``mean``, ``stack``,
comparisons ...), but turning it into a number (``float()``, ``.item()``, ``.tolist()``,
``.numpy()``) raises :class:`UnreportableMetricError`, so reporting code cannot print it by
accident. :func:`is_reportable` tells the two apart; a test that wants the raw values unwraps them
explicitly with ``values.as_subclass(torch.Tensor)``.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fourd.weights import WeightsNotFoundError, read_state_dict

__all__ = [
    "psnr",
    "ssim",
    "lpips",
    "build_lpips",
    "BACKBONE_FILES",
    "backbone_cache_path",
    "UnreportableMetricError",
    "UnreportableTensor",
    "is_reportable",
]

BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


class UnreportableMetricError(RuntimeError):
    """A metric value computed with a random network was about to become a reported number."""


class UnreportableTensor(torch.Tensor):
    """Metric values computed with a random backbone: usable in tensor code, refused as numbers."""

    def _refuse(self, *args, **kwargs):
        raise UnreportableMetricError(
            "this metric was computed with a RANDOM backbone (random_backbone=True, tests only) and is not "
            "LPIPS; pass the real backbone file (e.g. vgg16-397923af.pth) to report it, or unwrap with "
            ".as_subclass(torch.Tensor) in a test"
        )

    item = tolist = numpy = __float__ = __int__ = _refuse


def is_reportable(values: torch.Tensor) -> bool:
    """False for values computed with a random backbone (an :class:`UnreportableTensor`)."""
    return not isinstance(values, UnreportableTensor)


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
    (``features.*`` keys); None looks in the torch hub cache. ``random_backbone`` skips it (the
    module then gets ``random_backbone = True``; its values are not LPIPS).
    """
    import lpips as lpips_package

    if net not in BACKBONE_FILES:
        raise ValueError(f"lpips_net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
    source = None if random_backbone else _backbone_state(net, backbone_weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_package.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    linear_file = os.path.join(os.path.dirname(lpips_package.__file__), "weights", "v0.1", f"{net}.pth")
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
    model.random_backbone = bool(random_backbone)
    model.eval()
    model.requires_grad_(False)
    return model


_LPIPS_MODELS: dict[tuple, nn.Module] = {}


def lpips(
    pred: torch.Tensor,
    target: torch.Tensor,
    net: str = "vgg",
    weights: Optional[str] = None,
    random_backbone: bool = False,
) -> torch.Tensor:
    """LPIPS distance per image ``[B]`` (lower is better; 0 for identical images).

    ``weights``: URL of the torchvision backbone state dict (see the module docstring); None looks
    in the torch hub cache. ``random_backbone=True`` (tests only) returns an
    :class:`UnreportableTensor`. Models are built once per (net, weights, random_backbone, device)
    and kept.
    """
    _check_pair("lpips", pred, target)
    key = (net, weights, random_backbone, pred.device)
    if key not in _LPIPS_MODELS:
        _LPIPS_MODELS[key] = build_lpips(net, weights, random_backbone).to(pred.device)
    with torch.no_grad():
        values = _LPIPS_MODELS[key](pred.float(), target.float(), normalize=True).flatten(1).mean(1).to(pred.dtype)
    return values.as_subclass(UnreportableTensor) if random_backbone else values
