"""Scoring shared by every protocol: image metrics per method, per-cell PSNR maps, "n/a" reasons.

A :class:`Scoreboard` collects, for each method (a row of a table), per-image PSNR / SSIM / LPIPS of
the scored cells of ``[V, T]`` grids of frames, and a per-cell PSNR map (mean over scenes) for the
heat-map plot. Metrics that need a weights file the user did not give (LPIPS's VGG16 backbone) are
never computed with random weights: their column reads ``"n/a (no <file>)"``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import fsspec
import torch

from fourd.metrics import BACKBONE_FILES, backbone_cache_path, lpips, psnr, ssim
from fourd.weights import WeightsNotFoundError

__all__ = ["MetricSpec", "Scoreboard", "grid_psnr"]


@dataclass(frozen=True)
class MetricSpec:
    """Which image metrics to compute.

    ``lpips_weights``: fsspec URL of the torchvision LPIPS backbone (``vgg16-397923af.pth`` for
    ``lpips_net="vgg"``); None looks in the torch hub cache and reports ``n/a`` when it is not there
    (a named file that is missing raises :class:`fourd.weights.WeightsNotFoundError`).
    ``max_ssim_window``: SSIM's Gaussian window (11), shrunk to the image size for tiny images.
    """

    lpips_weights: Optional[str] = None
    lpips_net: str = "vgg"
    max_ssim_window: int = 11

    def __post_init__(self) -> None:
        if self.lpips_net not in BACKBONE_FILES:
            raise ValueError(f"metrics.lpips_net must be one of {sorted(BACKBONE_FILES)}, got {self.lpips_net!r}")


def grid_psnr(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per cell of frame grids ``[V, T, 3, H, W]`` in [0, 1] -> ``[V, T]``."""
    V, T = gt.shape[:2]
    return psnr(pred.flatten(0, 1).clamp(0, 1).float(), gt.flatten(0, 1).float()).reshape(V, T)


@dataclass
class Scoreboard:
    """Per-method metric values of one table (see the module docstring)."""

    spec: MetricSpec
    values: dict[str, dict[str, list[torch.Tensor]]] = field(default_factory=dict)
    cell_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    cell_counts: dict[str, torch.Tensor] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    scalars: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add_scalar(self, method: str, name: str, value: float) -> None:
        """One per-scene value of metric ``name`` for ``method`` (rows show the mean over scenes)."""
        self.scalars.setdefault(method, {}).setdefault(name, []).append(float(value))

    def add_grid(self, method: str, pred: torch.Tensor, gt: torch.Tensor, scored: Optional[torch.Tensor] = None) -> None:
        """Score frames ``pred``/``gt`` ``[V, T, 3, H, W]`` (pred clamped to [0, 1]) at the cells where
        the boolean ``scored [V, T]`` is True (all when None)."""
        if pred.shape != gt.shape or pred.dim() != 5:
            raise ValueError(f"{method}: pred and gt must both be [V, T, 3, H, W], got {list(pred.shape)} and {list(gt.shape)}")
        V, T = gt.shape[:2]
        scored = torch.ones(V, T, dtype=torch.bool) if scored is None else scored.bool().cpu()
        pred, gt = pred.detach().float().cpu().clamp(0, 1), gt.detach().float().cpu()
        self.add_images(method, pred[scored], gt[scored])
        cell = torch.where(scored, grid_psnr(pred, gt), torch.zeros(()))
        if method not in self.cell_sums or self.cell_sums[method].shape != (V, T):
            self.cell_sums[method], self.cell_counts[method] = torch.zeros(V, T, dtype=torch.float64), torch.zeros(V, T)
        self.cell_sums[method] += cell.double()
        self.cell_counts[method] += scored.float()

    def mean_psnr(self, method: str) -> float:
        """Mean PSNR (dB, capped at 100) of ``method`` over every image scored so far."""
        return _capped_mean(torch.cat(self.values[method]["psnr"]))

    def add_margins(self, baselines: Sequence[str], label: str = "best baseline") -> None:
        """Pick the best of ``baselines`` (rows of this table) by mean PSNR over the whole benchmark and
        give every other row a ``margin_db`` column: its mean PSNR minus the best baseline's (dB; > 0 =
        it beats it). The choice is recorded in :attr:`notes` under ``label``. No-op while none of the
        baselines has been scored. ``margin_ssim``: the same for SSIM against that baseline."""
        present = [b for b in baselines if b in self.values]
        if not present:
            return
        best = max(present, key=self.mean_psnr)
        best_psnr, best_ssim = self.mean_psnr(best), self._mean("ssim", best)
        self.notes[label] = f"{best} ({best_psnr:.2f} dB PSNR, {best_ssim:.4f} SSIM)"
        for method in self.values:
            if method not in baselines:
                margins = {"margin_db": self.mean_psnr(method) - best_psnr, "margin_ssim": self._mean("ssim", method) - best_ssim}
                self.extra.setdefault(method, {}).update(margins)

    def _mean(self, metric: str, method: str) -> float:
        return _capped_mean(torch.cat(self.values[method][metric]))  # the 100 dB cap only matters for PSNR

    def add_images(self, method: str, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Score images ``[N, 3, H, W]`` in [0, 1] for ``method``."""
        row = self.values.setdefault(method, {})
        window = min(self.spec.max_ssim_window, pred.shape[-1], pred.shape[-2])
        row.setdefault("psnr", []).append(psnr(pred, gt))
        row.setdefault("ssim", []).append(ssim(pred, gt, window_size=window))
        if self._lpips_available():
            row.setdefault("lpips", []).append(lpips(pred, gt, net=self.spec.lpips_net, weights=self.spec.lpips_weights))

    def _lpips_available(self) -> bool:
        """Whether LPIPS's backbone file exists (checked before building the network); records the
        ``n/a`` reason when it does not. A file the user named that is missing is an error."""
        if "lpips" in self.unavailable:
            return False
        net, weights = self.spec.lpips_net, self.spec.lpips_weights
        if weights is not None:
            fs, path = fsspec.core.url_to_fs(weights)
            if not fs.exists(path):
                raise WeightsNotFoundError(f"metrics.lpips_weights={weights} does not exist (the LPIPS {net} backbone, {BACKBONE_FILES[net]})")
            return True
        if os.path.exists(backbone_cache_path(net)):
            return True
        self.unavailable["lpips"] = f"n/a (no {BACKBONE_FILES[net]})"
        return False

    def rows(self) -> list[dict[str, Any]]:
        """One row per method: ``{"method", "psnr", "ssim", "lpips", <scalars>, "images", **extra}`` (means
        over images or scenes; unavailable metrics as their ``"n/a (...)"`` string)."""
        out = []
        for method, metrics in self.values.items():
            row: dict[str, Any] = {"method": method}
            for name in ("psnr", "ssim", "lpips"):
                if name in self.unavailable:
                    row[name] = self.unavailable[name]
                elif name in metrics:
                    row[name] = _capped_mean(torch.cat(metrics[name]))
            for name, values in self.scalars.get(method, {}).items():
                row[name] = sum(values) / len(values)
            row["images"] = int(sum(v.numel() for v in metrics["psnr"]))
            row.update(self.extra.get(method, {}))
            out.append(row)
        return out

    def cell_maps(self) -> dict[str, list[list[Optional[float]]]]:
        """Per method, the mean PSNR of each ``[V, T]`` cell over scenes (None where never scored)."""
        maps = {}
        for method, sums in self.cell_sums.items():
            counts = self.cell_counts[method]
            mean = torch.where(counts > 0, sums / counts.clamp(min=1), torch.nan)
            maps[method] = [[None if math.isnan(x) else round(x, 3) for x in r] for r in mean.tolist()]
        return maps


def _capped_mean(values: torch.Tensor) -> float:
    """Mean with PSNR capped at 100 dB (identical images give inf)."""
    values = values.double().clamp(max=100.0)
    return float(values.mean())
