"""Multi-view consistency of a 4D grid by reprojection, in the spirit of Met3R (Asim et al. 2025),
with no downloaded network.

Definition (per grid ``b`` and timestep ``t``; views ``i != j``; pixel ``p`` of view ``i``):

1. Geometry: depth ``D_i`` (camera z), camera-from-world extrinsics ``E_i [3, 4]`` and intrinsics
   ``K_i [3, 3]`` (pixels) of every view at that timestep, either given (ground truth, or any
   estimate) or predicted from the grid itself by a reconstructor (:func:`geometry_from_reconstructor`,
   e.g. our VGGT-based :class:`recon.model.Reconstructor`; depth and cameras only need to agree with
   each other, so the reconstruction's unknown scale does not matter).
2. Reprojection: ``X = unproject(p, D_i(p), E_i, K_i)`` (world point), ``(q, z) = project(X, E_j, K_j)``
   (:mod:`recon.geometry`, the project's pixel-centre convention).
3. Visibility mask ``m_ij(p)``: ``z > 0``; ``q`` inside view ``j``; not occluded in view ``j``:
   ``|D_j(q) - z| <= rel_depth_tol * z`` (``D_j`` sampled at the nearest pixel); source depth finite and
   positive; and, when a confidence map is available, ``conf_i(p) >= min_confidence``.
4. Error: ``e_ij(p) = mean_c |F_i(p) - F_j(q)|`` with ``F`` the RGB image in [0, 1] (default) or the
   features of a ``feature_fn`` (bilinearly upsampled to the image size), ``F_j(q)`` sampled
   bilinearly.
5. Scores: ``error[b, t] = Σ_ij Σ_p m e / Σ_ij Σ_p m`` (all valid reprojections pooled; lower is
   better, 0 = perfectly consistent), ``coverage[b, t] = Σ m / (V (V - 1) H W)`` (how much of the
   grid the score is about; report it next to the error), ``pair_error[b, t, i, j]`` (NaN where
   ``i = j`` or nothing is visible), and ``mean[b]`` = the mean of ``error`` over timesteps (NaN
   timesteps without any valid pixel skipped).

A view that does not match the others raises the error of every pair it is in; a perfectly
consistent grid rendered from the geometry scores ~0 up to resampling error. See
docs/eval_metrics.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

from recon.geometry import pixel_grid, project_points, unproject_depth

__all__ = ["Geometry", "geometry_from_reconstructor", "reprojection_consistency"]


@dataclass(frozen=True)
class Geometry:
    """Depth and cameras of a grid: ``depth [B, V, T, H, W]`` (camera z, > 0), ``extrinsics
    [B, V, T, 3, 4]`` camera-from-world (OpenCV), ``intrinsics [B, V, T, 3, 3]`` pixels, optional
    ``confidence [B, V, T, H, W]`` (higher = surer)."""

    depth: torch.Tensor
    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    confidence: Optional[torch.Tensor] = None

    def check(self, grids: torch.Tensor) -> None:
        B, V, T, _, H, W = grids.shape
        expected = {"depth": (B, V, T, H, W), "extrinsics": (B, V, T, 3, 4), "intrinsics": (B, V, T, 3, 3)}
        if self.confidence is not None:
            expected["confidence"] = (B, V, T, H, W)
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"Geometry.{name} must be {list(shape)} for grids {list(grids.shape)}, got {list(getattr(self, name).shape)}")


GeometrySource = Union[Geometry, Callable[[torch.Tensor], Geometry]]


def geometry_from_reconstructor(model: torch.nn.Module) -> Callable[[torch.Tensor], Geometry]:
    """A geometry source running ``model(grids [B, V, T, 3, H, W])`` (no grad) and taking its
    ``depth``, ``extrinsics``, ``intrinsics`` and ``depth_conf`` (the fields of
    :class:`recon.model.reconstructor.ReconstructionOutput`). H, W must suit the model (VGGT: multiples of 14)."""

    def predict(grids: torch.Tensor) -> Geometry:
        with torch.no_grad():
            out = model(grids)
        if out.depth is None or out.extrinsics is None:
            raise ValueError("geometry_from_reconstructor: the model returned no depth or no cameras (enable its depth and camera heads)")
        return Geometry(out.depth.float(), out.extrinsics.float(), out.intrinsics.float(),
                        None if out.depth_conf is None else out.depth_conf.float())

    return predict


def _index_to_normalized(coord: torch.Tensor, size: int, centre_offset: float) -> torch.Tensor:
    """Pixel coordinate (project convention: index i has centre i + centre_offset) -> grid_sample's [-1, 1]."""
    return (2 * (coord - centre_offset) + 1) / size - 1


def _timestep_scores(feats, depth, ext, K, conf, rel_depth_tol, min_confidence):
    """One timestep: ``feats [V, C, H, W]``, ``depth [V, H, W]``, ``ext [V, 3, 4]``, ``K [V, 3, 3]``,
    ``conf [V, H, W] | None`` -> (masked error sum [V, V], valid count [V, V])."""
    V, C, H, W = feats.shape
    offset = float(pixel_grid(1, 1)[0, 0, 0])
    points = unproject_depth(depth, ext, K).reshape(V, 1, H * W, 3)  # source i, world points
    pix, z = project_points(points, ext[None], K[None])  # [Vi, Vj, HW, 2], [Vi, Vj, HW]
    grid = torch.stack([_index_to_normalized(pix[..., 0], W, offset), _index_to_normalized(pix[..., 1], H, offset)], -1)
    grid = grid.transpose(0, 1).nan_to_num(2.0, 2.0, 2.0)  # [Vj, Vi, HW, 2]: sample target j at every source pixel
    sampled = F.grid_sample(feats, grid, mode="bilinear", padding_mode="border", align_corners=False)  # [Vj, C, Vi, HW]
    target_depth = F.grid_sample(depth[:, None], grid, mode="nearest", padding_mode="border", align_corners=False)[:, 0]
    sampled, target_depth = sampled.permute(2, 0, 1, 3), target_depth.transpose(0, 1)  # [Vi, Vj, C, HW], [Vi, Vj, HW]

    inside = (grid.transpose(0, 1).abs() <= 1).all(-1)
    source_ok = torch.isfinite(depth) & (depth > 0)
    if conf is not None and min_confidence is not None:
        source_ok &= conf >= min_confidence
    visible = (z > 0) & ((target_depth - z).abs() <= rel_depth_tol * z)
    valid = inside & visible & source_ok.reshape(V, 1, H * W) & ~torch.eye(V, dtype=torch.bool, device=feats.device)[..., None]
    error = (feats.reshape(V, 1, C, H * W) - sampled).abs().mean(2)  # [Vi, Vj, HW]
    return torch.where(valid, error, 0).sum(-1).double(), valid.sum(-1).double()


def reprojection_consistency(
    grids: torch.Tensor,
    geometry: GeometrySource,
    feature_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    rel_depth_tol: float = 0.05,
    min_confidence: Optional[float] = None,
) -> dict[str, torch.Tensor]:
    """Reprojection consistency of ``grids [B, V, T, 3, H, W]`` in [0, 1] (V >= 2); see the module docstring.

    Args:
        geometry: a :class:`Geometry` or a callable ``grids -> Geometry`` (e.g. :func:`geometry_from_reconstructor`).
        feature_fn: ``images [N, 3, H, W] -> [N, C, h, w]`` compared instead of RGB (None: RGB).
        rel_depth_tol: occlusion test tolerance, relative to depth.
        min_confidence: drop source pixels whose confidence is below this (None: keep all).
    Returns:
        ``{"error": [B, T], "coverage": [B, T], "pair_error": [B, T, V, V], "mean": [B]}`` float64.
    """
    if grids.dim() != 6 or grids.shape[3] != 3 or grids.shape[1] < 2:
        raise ValueError(f"reprojection_consistency expects grids [B, V >= 2, T, 3, H, W] in [0, 1], got {list(grids.shape)}")
    if not rel_depth_tol > 0:
        raise ValueError(f"rel_depth_tol must be > 0, got {rel_depth_tol}")
    geo = geometry if isinstance(geometry, Geometry) else geometry(grids)
    geo.check(grids)
    B, V, T, _, H, W = grids.shape
    with torch.no_grad():
        feats = grids.float().flatten(0, 2)  # [B*V*T, 3, H, W]
        if feature_fn is not None:
            feats = feature_fn(feats).float()
            if feats.shape[-2:] != (H, W):
                feats = F.interpolate(feats, size=(H, W), mode="bilinear", align_corners=False)
        feats = feats.reshape(B, V, T, -1, H, W)
        sums = torch.zeros(B, T, V, V, dtype=torch.float64)
        counts = torch.zeros_like(sums)
        for b in range(B):
            for t in range(T):
                conf = None if geo.confidence is None else geo.confidence[b, :, t].float()
                s, n = _timestep_scores(feats[b, :, t], geo.depth[b, :, t].float(), geo.extrinsics[b, :, t].float(),
                                        geo.intrinsics[b, :, t].float(), conf, rel_depth_tol, min_confidence)
                sums[b, t], counts[b, t] = s.cpu(), n.cpu()
    error = sums.sum((-1, -2)) / counts.sum((-1, -2))  # NaN where nothing is visible
    return {
        "error": error,
        "coverage": counts.sum((-1, -2)) / (V * (V - 1) * H * W),
        "pair_error": sums / counts,
        "mean": error.nanmean(1),
    }
