"""VGGT's own supervision (camera, depth and point losses with confidence) and its error metrics.

Written from the VGGT paper (Wang et al. 2025, §3.4) and the public training recipe's constants:

- **Camera**: L1 between every camera-head iteration's pose encoding ``[t (3), q xyzw (4), fov_h,
  fov_w]`` and the ground truth's, split into translation, rotation and field-of-view terms weighted
  1 / 1 / 0.5; iteration ``i`` of ``n`` is weighted ``gamma^(n - 1 - i)`` (gamma 0.6, the last one
  weight 1), averaged over iterations.
- **Depth**: aleatoric confidence form ``c |d - d_gt| - alpha log c`` (alpha 0.2) plus the plain
  ``|d - d_gt|`` term and a confidence-weighted gradient term: L1 of the horizontal and vertical
  finite differences of ``d - d_gt`` over valid neighbour pairs, at 3 scales (strides 1, 2, 4).
- **Points**: the same confidence form on the Euclidean distance ``c ||P - P_gt|| - alpha log c``
  plus ``||P - P_gt||`` (VGGT's surface-normal gradient term for points is not kept).

Total = 5 camera + 1 depth + 1 point (the camera weight 5.0 of VGGT's public training config).
Not kept: the quantile outlier filter (``valid_range``; our synthetic ground truth has no outliers)
and the tracking loss (no track head is trained here). Everything lives in VGGT's normalised frame:
the first camera is the identity and lengths are divided by the mean distance of the valid points
(:func:`recon.train_task.normalize_ground_truth`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = [
    "VGGTLossConfig",
    "camera_loss",
    "confidence_regression",
    "gradient_loss",
    "rotation_angle_deg",
    "translation_angle_deg",
    "abs_rel_median_aligned",
]


@dataclass(frozen=True)
class VGGTLossConfig:
    """Weights of :func:`recon.pretrain_task.BaseTask.loss` (VGGT's constants by default)."""

    camera_weight: float = 5.0  # whole camera term (VGGT training config: 5.0)
    depth_weight: float = 1.0  # whole depth term (confidence + plain + gradient)
    point_weight: float = 1.0  # whole point term (confidence + plain)
    gradient_weight: float = 1.0  # gradient part of the depth term
    alpha: float = 0.2  # confidence regulariser: c * err - alpha * log(c)
    gamma: float = 0.6  # camera-head iteration decay
    weight_trans: float = 1.0
    weight_rot: float = 1.0
    weight_focal: float = 0.5

    def __post_init__(self) -> None:
        for name in ("camera_weight", "depth_weight", "point_weight", "gradient_weight", "alpha", "weight_trans", "weight_rot", "weight_focal"):
            if getattr(self, name) < 0:
                raise ValueError(f"base loss {name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"base loss gamma must be in (0, 1], got {self.gamma}")


def camera_loss(pose_enc_list: Sequence[torch.Tensor], target: torch.Tensor, cfg: VGGTLossConfig) -> dict[str, torch.Tensor]:
    """VGGT camera loss of the iterations ``pose_enc_list`` (each ``[..., 9]``) against ``target [..., 9]``.

    Returns ``camera`` (weighted total), ``cam_t``, ``cam_r``, ``cam_fov`` (iteration-weighted means).
    """
    n = len(pose_enc_list)
    if n == 0:
        raise ValueError("camera_loss needs at least one camera-head iteration (pose_enc_list is empty)")
    parts = torch.zeros(3, device=target.device, dtype=target.dtype)
    for i, enc in enumerate(pose_enc_list):
        err = (enc - target).abs()
        terms = torch.stack([err[..., :3].clamp(max=100).mean(), err[..., 3:7].mean(), err[..., 7:].mean()])
        parts = parts + cfg.gamma ** (n - 1 - i) * terms
    parts = parts / n
    total = cfg.weight_trans * parts[0] + cfg.weight_rot * parts[1] + cfg.weight_focal * parts[2]
    return {"camera": total, "cam_t": parts[0], "cam_r": parts[1], "cam_fov": parts[2]}


def confidence_regression(err: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """VGGT's aleatoric term: mean over valid pixels of ``conf * err - alpha * log(conf)``, and the
    plain mean of ``err``. ``err``, ``conf`` (> 1), ``valid`` (bool) share a shape."""
    count = valid.sum().clamp(min=1)
    conf_term = ((conf * err - alpha * torch.log(conf)) * valid).sum() / count
    return conf_term, (err * valid).sum() / count


def gradient_loss(pred: torch.Tensor, gt: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """Confidence-weighted L1 of the finite differences of ``pred - gt`` (``[N, H, W]``) over pairs of
    valid neighbours, averaged over ``scales`` strides ``1, 2, 4, ...`` (VGGT's multi-scale "grad")."""
    total = pred.new_zeros(())
    for s in range(scales):
        step = 2 ** s
        diff, c, m = (x[:, ::step, ::step] for x in (pred - gt, conf, valid.to(pred.dtype)))
        for dim in (-1, -2):
            n = diff.shape[dim]
            if n < 2:
                continue
            a, b = diff.narrow(dim, 1, n - 1), diff.narrow(dim, 0, n - 1)
            pair = m.narrow(dim, 1, n - 1) * m.narrow(dim, 0, n - 1)
            weight = pair * 0.5 * (c.narrow(dim, 1, n - 1) + c.narrow(dim, 0, n - 1))
            total = total + ((a - b).abs() * weight).sum() / pair.sum().clamp(min=1)
    return total / scales


# --------------------------------------------------------------------------------------- metrics
def rotation_angle_deg(pred_ext: torch.Tensor, gt_ext: torch.Tensor) -> torch.Tensor:
    """Angle (degrees) of ``R_pred R_gt^T`` per camera; extrinsics ``[..., 3, 4]`` -> ``[...]``."""
    rel = pred_ext[..., :3, :3] @ gt_ext[..., :3, :3].transpose(-1, -2)
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def translation_angle_deg(pred_t: torch.Tensor, gt_t: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Angle (degrees) between translation directions ``[..., 3]`` (scale-free; a zero vector counts 90)."""
    cos = (pred_t * gt_t).sum(-1) / (pred_t.norm(dim=-1) * gt_t.norm(dim=-1)).clamp(min=eps)
    return torch.rad2deg(torch.acos(cos.clamp(-1, 1)))


def abs_rel_median_aligned(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-sample abs-rel ``mean |s d - d_gt| / d_gt`` over valid pixels (gt > 0) after the median
    scale ``s = median(d_gt / d)``; ``pred``, ``gt`` ``[B, ...]`` -> ``[B]``."""
    out = []
    for p, g in zip(pred.flatten(1), gt.flatten(1)):
        valid = g > 0
        p, g = p[valid], g[valid]
        s = (g / p.clamp(min=1e-8)).median()
        out.append(((s * p - g).abs() / g).mean())
    return torch.stack(out)

