"""Novel-view synthesis with the feedforward reconstructor: the paper's test-time procedure and an
"oracle cameras" variant.

**Test-time cameras (default, paper §4.2; uses no ground truth).** Pass 1 reconstructs the input
views ``[B, V_in, T]``; its Gaussians are mapped into the predicted camera of input view 0 (at each
timestep). Pass 2 runs the same model on the first input view plus the target frames ``[B, 1 +
V_tgt, T]`` and predicts their cameras; pass 2's first camera is input view 0, so its target
cameras re-expressed relative to it are in the Gaussians' frame. The two passes fix their scale
independently (VGGT normalises by its own point cloud), so pass 2's translations are multiplied by
``s = median(depth_1 / depth_2)`` over the pixels of input view 0, which both passes see (a
per-sample scalar from predictions only). Target intrinsics come from pass 2 (predicted intrinsics
use the renderer's pixel-centre convention already, :func:`recon.geometry.pose_encoding_to_cameras`).

**Oracle cameras (reported separately).** The training-time evaluation of
:mod:`recon.train_task`: ground-truth target cameras (re-expressed in input view 0 and
scale-normalised) and the prediction scaled to the ground truth by the median depth ratio of the
input views. Needs ground-truth cameras and depth; it measures the Gaussians alone, not the
camera prediction.

**Ground-truth geometry (an oracle ceiling, no model).** One Gaussian per input pixel at its
ground-truth depth, seen through the ground-truth cameras, coloured by the pixel, isotropic with a
``footprint`` of the pixel (``depth / focal`` world units; 0.5 is the Gaussian head's
``init_scale_px``), opacity 0.99, rendered as the model's Gaussians are (gsplat's ``eps2d = 0.3``).
It is what a pixel-aligned reconstructor would render with perfect depth and cameras and no learned
refinement: the ceiling of that family on a benchmark, not of every method.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch

from recon.geometry import unproject_depth
from recon.inference import gaussians_in_reference_frame, relative_extrinsics, render_views
from recon.model import Gaussians
from recon.train_task import normalize_ground_truth, scale_alignment

__all__ = ["render_test_time_cameras", "render_oracle_cameras", "render_ground_truth_geometry", "pass_scale"]


def pass_scale(depth_1: torch.Tensor, depth_2: torch.Tensor) -> torch.Tensor:
    """Per-sample scale ``[B]`` taking pass 2's units to pass 1's: median of ``depth_1 / depth_2`` over
    the pixels ``[B, ..., H, W]`` of the frames both passes saw."""
    ratio = depth_1 / depth_2.clamp(min=1e-6)
    return ratio.flatten(1).median(dim=1).values


@torch.no_grad()
def render_test_time_cameras(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                     background: Optional[Sequence[float]] = None, backend: str = "auto") -> dict[str, torch.Tensor]:
    """Render the targets' viewpoints from the inputs with cameras predicted at test time.

    ``inputs [B, V_in, T, 3, H, W]`` and ``targets [B, V_tgt, T, 3, H, W]`` in [0, 1]. Returns
    ``renders [B, V_tgt, T, 3, H, W]`` (not clamped), ``extrinsics [B, V_tgt, T, 3, 4]`` and
    ``intrinsics [B, V_tgt, T, 3, 3]`` of the targets in the Gaussians' frame, ``scale [B]`` (pass 2
    -> pass 1 units).
    """
    out = model(inputs)
    B = inputs.shape[0]
    g = gaussians_in_reference_frame(out.gaussians, out.extrinsics[:, 0], torch.ones(B, device=inputs.device))
    probe = model(torch.cat([inputs[:, :1], targets], dim=1))
    ext = relative_extrinsics(probe.extrinsics[:, 1:], probe.extrinsics[:, :1])
    scale = pass_scale(out.depth[:, 0], probe.depth[:, 0])
    ext = torch.cat([ext[..., :3], ext[..., 3:] * scale[:, None, None, None, None]], dim=-1)
    K = probe.intrinsics[:, 1:]
    H, W = targets.shape[-2:]
    renders = render_views(g, ext, K, H, W, background, backend)
    return {"renders": renders, "extrinsics": ext, "intrinsics": K, "scale": scale}


@torch.no_grad()
def render_oracle_cameras(model: torch.nn.Module, batch: Mapping[str, Any],
                  background: Optional[Sequence[float]] = None, backend: str = "auto") -> torch.Tensor:
    """Render the targets with ground-truth cameras (see the module docstring).

    ``batch``: ``inputs``/``targets`` ``[B, V, T, 3, H, W]``, ``in_depth [B, V_in, T, H, W]`` (0 =
    invalid), ``in_ext``/``tgt_ext`` ``[B, V, T, 3, 4]``, ``in_K``/``tgt_K`` ``[B, V, T, 3, 3]``
    (pixel centres at +0.5). Returns renders ``[B, V_tgt, T, 3, H, W]`` (not clamped).
    """
    out = model(batch["inputs"])
    gt = normalize_ground_truth(batch)
    align = scale_alignment(out.depth, gt["depth"])
    g = gaussians_in_reference_frame(out.gaussians, out.extrinsics[:, 0], align)
    H, W = batch["targets"].shape[-2:]
    return render_views(g, gt["tgt_ext"], batch["tgt_K"], H, W, background, backend)


@torch.no_grad()
def render_ground_truth_geometry(batch: Mapping[str, Any], footprint: float = 0.5, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Render the targets from the inputs' pixels placed at their ground-truth depth (the oracle
    ceiling of the module docstring).

    ``batch``: as :func:`render_oracle_cameras` (``inputs``, ``in_depth`` with 0 or non-finite =
    invalid, ``in_ext``, ``in_K``, ``tgt_ext``, ``tgt_K``; ``targets`` only for the size). Returns
    ``renders [B, V_tgt, T, 3, H, W]`` on black and their coverage ``alphas [B, V_tgt, T, 1, H, W]``
    (1 - transmittance), so a caller can fill what no input pixel reaches.
    """
    depth = batch["in_depth"].float()  # [B, V, T, H, W]
    valid = torch.isfinite(depth) & (depth > 0)
    depth = torch.where(valid, depth, torch.ones_like(depth))
    ext, K = batch["in_ext"].float(), batch["in_K"].float()  # [B, V, T, 3, 4], [B, V, T, 3, 3]
    means = unproject_depth(depth, ext, K)  # [B, V, T, H, W, 3]
    focal = (K[..., 0, 0] * K[..., 1, 1]).sqrt()[..., None, None]  # [B, V, T, 1, 1]
    size = (footprint * depth / focal)[..., None].expand(*depth.shape, 3)
    rgb = batch["inputs"].float().permute(0, 1, 2, 4, 5, 3)  # [B, V, T, H, W, 3]
    colors = torch.cat([rgb, torch.ones_like(rgb[..., :1])], dim=-1)  # a 4th channel of ones composites to the coverage

    def per_time(x: torch.Tensor) -> torch.Tensor:  # [B, V, T, H, W, ...] -> [B, T, V*H*W, ...]
        return x.transpose(1, 2).flatten(2, 4)

    quats = torch.zeros(*means.shape[:-1], 4, device=means.device)
    quats[..., 0] = 1.0
    g = Gaussians(means=per_time(means), quats=per_time(quats), scales=per_time(size),
                  opacities=per_time(valid.float() * 0.99), colors=per_time(colors))
    H, W = batch["targets"].shape[-2:]
    out = render_views(g, batch["tgt_ext"].float(), batch["tgt_K"].float(), H, W, None, backend)  # [B, V_tgt, T, 4, H, W]
    return out[:, :, :, :3], out[:, :, :, 3:]
