"""The FVD family over 4D grids (SV4D / SV4D 2.0 §4): FVD-F, FVD-V, FVD-Diag and FV4D.

A 4D grid ``[B, V, T, 3, H, W]`` in [0, 1] (``video4d.grid`` layout: view v, timestep t) is cut into
videos, each video is embedded by a feature network (the I3D of :mod:`eval.i3d` for reported
numbers), and the Fréchet distance between the Gaussians fitted to the predicted and the
ground-truth feature sets is the score (lower is better). The four ways to cut a grid:

* **FVD-F** (frames at a fixed view): ``V`` videos per grid, video ``v`` = cells ``(v, 0) ... (v, T-1)``.
* **FVD-V** (views at a fixed frame): ``T`` videos per grid, video ``t`` = cells ``(0, t) ... (V-1, t)``.
* **FVD-Diag**: one video per grid, the main diagonal ``(0, 0), (1, 1) ... (n-1, n-1)``, ``n = min(V, T)``.
* **FV4D**: one video of ``V * T`` frames per grid scanning the whole image matrix in bidirectional
  raster (zig-zag) order, rows = views: view 0 over t = 0 ... T-1, view 1 over t = T-1 ... 0, view 2
  forwards again, ... so consecutive frames always differ by one step in time or in view.

:func:`video_cells` gives these index lists; :func:`fvd_family` computes all four. Statistics use
the unbiased covariance (``N - 1``) like the reference FID/FVD code; each set needs at least two
videos (FVD-Diag and FV4D: at least two grids). With few videos the estimate is biased upwards, so
compare numbers only at equal set sizes.

**Reportability.** Scores are 0-d float64 tensors. When the feature network does not declare
``weights_loaded = True`` (as :func:`eval.i3d.load_i3d` does after reading a weights file), they are
:class:`fourd.metrics.UnreportableTensor`: ``float()`` / ``.item()`` on them raise, so a random
network never yields a reported FVD.
"""
from __future__ import annotations

from typing import Callable

import torch

from fourd.metrics import UnreportableTensor

__all__ = ["VARIANTS", "frechet_distance", "gaussian_stats", "video_cells", "grid_videos", "fvd", "fvd_family"]

VARIANTS = ("FVD-F", "FVD-V", "FVD-Diag", "FV4D")

FeatureNet = Callable[[torch.Tensor], torch.Tensor]  # videos [N, F, 3, H, W] in [0, 1] -> [N, D]


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (``[D]``, ``[D, D]`` each), float64.

    ``|mu1 - mu2|² + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½)``, with ``tr (sigma1 sigma2)^½``
    computed as ``Σ sqrt(eig(A sigma2 A))``, ``A = sigma1^½`` (symmetric PSD; eigenvalues clamped at
    0), which avoids the complex intermediate of a general matrix square root.
    """
    if mu1.shape != mu2.shape or mu1.dim() != 1 or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"frechet_distance needs mu [D] and sigma [D, D] twice, got {list(mu1.shape)}, {list(sigma1.shape)}, "
                         f"{list(mu2.shape)}, {list(sigma2.shape)}")
    mu1, mu2, s1, s2 = (x.double() for x in (mu1, mu2, sigma1, sigma2))
    evals, evecs = torch.linalg.eigh((s1 + s1.T) / 2)
    root1 = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    middle = root1 @ s2 @ root1
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of ``features [N, D]``, N >= 2."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"gaussian_stats needs features [N >= 2, D], got {list(features.shape)}: FVD needs at least two videos per set")
    x = features.double()
    return x.mean(0), torch.cov(x.T, correction=1).reshape(x.shape[1], x.shape[1])


def video_cells(variant: str, num_views: int, num_steps: int) -> list[list[tuple[int, int]]]:
    """The videos ``variant`` cuts from a ``V x T`` grid, each a list of ``(view, timestep)`` cells in frame order."""
    V, T = num_views, num_steps
    if variant == "FVD-F":
        return [[(v, t) for t in range(T)] for v in range(V)]
    if variant == "FVD-V":
        return [[(v, t) for v in range(V)] for t in range(T)]
    if variant == "FVD-Diag":
        return [[(i, i) for i in range(min(V, T))]]
    if variant == "FV4D":
        return [[(v, t) for v in range(V) for t in (range(T) if v % 2 == 0 else reversed(range(T)))]]
    raise ValueError(f"unknown FVD variant {variant!r}; choose one of {VARIANTS}")


def grid_videos(grids: torch.Tensor, variant: str) -> torch.Tensor:
    """Cut ``grids [B, V, T, 3, H, W]`` into the videos of ``variant``: ``[B * n, L, 3, H, W]`` (grid-major)."""
    if grids.dim() != 6 or grids.shape[3] != 3:
        raise ValueError(f"FVD expects grids [B, V, T, 3, H, W] in [0, 1], got {list(grids.shape)}")
    cells = video_cells(variant, grids.shape[1], grids.shape[2])
    views = torch.tensor([[v for v, _ in video] for video in cells], device=grids.device)  # [n, L]
    steps = torch.tensor([[t for _, t in video] for video in cells], device=grids.device)
    return grids[:, views, steps].flatten(0, 1)  # [B, n, L, 3, H, W] -> [B*n, L, 3, H, W]


def _features(videos: torch.Tensor, feature_net: FeatureNet, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([feature_net(videos[i:i + batch_size]).double().cpu() for i in range(0, videos.shape[0], batch_size)])


def _flag(value: torch.Tensor, feature_net: FeatureNet) -> torch.Tensor:
    return value if getattr(feature_net, "weights_loaded", False) else value.as_subclass(UnreportableTensor)


def fvd(pred_videos: torch.Tensor, gt_videos: torch.Tensor, feature_net: FeatureNet, batch_size: int = 8) -> torch.Tensor:
    """FVD between two sets of videos ``[N, F, 3, H, W]`` in [0, 1] (N >= 2 each; N and F may differ)."""
    mu1, s1 = gaussian_stats(_features(pred_videos, feature_net, batch_size))
    mu2, s2 = gaussian_stats(_features(gt_videos, feature_net, batch_size))
    return _flag(frechet_distance(mu1, s1, mu2, s2), feature_net)


def fvd_family(
    pred_grids: torch.Tensor,
    gt_grids: torch.Tensor,
    feature_net: FeatureNet,
    variants: tuple[str, ...] = VARIANTS,
    batch_size: int = 8,
) -> dict[str, torch.Tensor]:
    """``{"FVD-F", "FVD-V", "FVD-Diag", "FV4D"}`` -> 0-d float64 scores for ``pred_grids`` vs ``gt_grids``.

    Args:
        pred_grids, gt_grids: ``[B, V, T, 3, H, W]`` in [0, 1]; same ``V, T``; ``B`` may differ.
        feature_net: callable ``videos [N, F, 3, H, W] -> [N, D]``, e.g. ``eval.i3d.load_i3d(weights=...)``.
        variants: which scores to compute.
        batch_size: videos per ``feature_net`` call.
    """
    if pred_grids.shape[1:3] != gt_grids.shape[1:3]:
        raise ValueError(f"fvd_family: predicted and ground-truth grids differ in (V, T): {tuple(pred_grids.shape[1:3])} vs "
                         f"{tuple(gt_grids.shape[1:3])}")
    return {v: fvd(grid_videos(pred_grids, v), grid_videos(gt_grids, v), feature_net, batch_size) for v in variants}
