"""Inference with the feedforward reconstructor: frames -> cameras + Gaussians -> renders and export.

Everything here is free of training code (``recon.train_task`` imports from this module, never the
other way). Frames of reference: the Gaussians of timestep ``t`` are expressed in the predicted
camera of input view 0 at ``t`` (with camera token replacement one camera for all timesteps), so
that camera is the identity; the scale is the one predicted (no ground truth is needed).

Files written by :func:`export_scene` (``recon.export.export_sequence``):

- ``gaussians_t{t:04d}.ply``: the Gaussians of timestep ``t`` (standard 3DGS layout);
- ``cameras.json``: the predicted input cameras at timestep 0 (OpenCV camera-from-world, intrinsics
  with pixel centres at +0.5, i.e. ready for gsplat-style renderers);
- ``novel_views.mp4``: ``path_frames`` frames along a camera path through the input cameras (in view
  order) at timestep ``time`` (bullet time);
- ``novel_times.mp4``: all ``T`` timesteps from a novel camera halfway between input views 0 and 1.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence

import torch

from fourd.data.transforms import ResizeCrop
from recon.export import export_sequence
from fourd.rotations import matrix_to_quat_wxyz, quat_multiply_wxyz
from recon.model import Gaussians
from recon.render import render_gaussians

__all__ = [
    "relative_extrinsics",
    "gaussians_in_reference_frame",
    "render_views",
    "camera_path",
    "reconstruct",
    "export_scene",
    "export_grid",
    "fit_frames",
    "select_times",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ geometry
def relative_extrinsics(ext: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Camera-from-world ``ext [..., 3, 4]`` re-expressed with world = camera ``ref [..., 3, 4]`` (broadcast)."""
    R, t = ext[..., :3, :3], ext[..., :3, 3:]
    Rr, tr = ref[..., :3, :3], ref[..., :3, 3:]
    R_new = R @ Rr.transpose(-1, -2)
    return torch.cat([R_new, t - R_new @ tr], dim=-1)


def gaussians_in_reference_frame(g: Gaussians, ref_ext: torch.Tensor, scale: torch.Tensor) -> Gaussians:
    """Map Gaussians ``[B, T, N]`` into the cameras ``ref_ext [B, T, 3, 4]`` (one per timestep) and
    scale them by ``scale [B]``: means ``s (R x + t)``, quats ``q(R) q``, scales ``s * scales``."""
    R, t = ref_ext[..., :3, :3], ref_ext[..., :3, 3]
    s = scale[:, None, None, None]
    means = (torch.einsum("btij,btnj->btni", R, g.means) + t[:, :, None]) * s
    quats = quat_multiply_wxyz(matrix_to_quat_wxyz(R)[:, :, None], g.quats)
    return Gaussians(means=means, quats=quats, scales=g.scales * s, opacities=g.opacities, colors=g.colors)


def render_views(g: Gaussians, ext: torch.Tensor, K: torch.Tensor, height: int, width: int,
                 background: Optional[Sequence[float]] = None, backend: str = "auto") -> torch.Tensor:
    """Render the Gaussians of each timestep ``[B, T, N]`` into cameras ``ext [B, V, T, 3, 4]``
    (camera-from-world) with intrinsics ``K [B, V, T, 3, 3]`` (pixel centres at +0.5).

    Returns the composited colours ``[B, V, T, D, H, W]`` (float32, not clamped; ``D`` = the channels of
    ``g.colors``, 3 for RGB); ``background``: ``D`` values or None (black).
    """
    B, V, T = ext.shape[:3]
    D = g.colors.shape[-1]
    viewmats = torch.eye(4, device=ext.device).repeat(B, T, V, 1, 1)
    viewmats[..., :3, :] = ext.transpose(1, 2).float()
    bg = None if background is None else torch.tensor(list(background), device=ext.device).expand(B * T, V, D)
    flat = [x.flatten(0, 1).float() for x in (g.means, g.quats, g.scales, g.opacities, g.colors)]
    rgb, _, _ = render_gaussians(*flat, viewmats.flatten(0, 1), K.transpose(1, 2).flatten(0, 1).float(), width, height,
                                 backgrounds=bg, backend=backend)
    return rgb.reshape(B, T, V, height, width, D).permute(0, 2, 1, 5, 3, 4)


def _orthonormalize(m: torch.Tensor) -> torch.Tensor:
    """Nearest rotation ``[..., 3, 3]`` to ``m`` (SVD projection, det +1)."""
    U, _, Vh = torch.linalg.svd(m)
    D = torch.ones_like(m[..., 0])
    D[..., -1] = torch.linalg.det(U @ Vh).sign()
    return U @ torch.diag_embed(D) @ Vh


def camera_path(ext: torch.Tensor, K: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras at fractional view ``positions [F]`` in ``[0, V-1]`` along cameras ``ext [V, 3, 4]``
    (camera-from-world) and ``K [V, 3, 3]``: camera centres and intrinsics interpolated linearly,
    rotations linearly then projected onto SO(3). Returns ``ext [F, 3, 4]``, ``K [F, 3, 3]``."""
    V = ext.shape[0]
    positions = positions.clamp(0, V - 1)
    lo = positions.floor().long().clamp(max=max(V - 2, 0))
    hi = (lo + 1).clamp(max=V - 1)
    w = (positions - lo)[:, None, None]
    R = ext[:, :, :3]
    centers = -(R.transpose(-1, -2) @ ext[:, :, 3:])  # [V, 3, 1]
    R_new = _orthonormalize((1 - w) * R[lo] + w * R[hi])
    c_new = (1 - w) * centers[lo] + w * centers[hi]
    return torch.cat([R_new, -(R_new @ c_new)], dim=-1), (1 - w) * K[lo] + w * K[hi]


# ---------------------------------------------------------------------------------- reconstruct
@torch.no_grad()
def reconstruct(model: torch.nn.Module, frames: torch.Tensor) -> dict[str, Any]:
    """Run the reconstructor on ``frames [V, T, 3, H, W]`` in [0, 1].

    Returns ``gaussians`` (:class:`recon.model.Gaussians` ``[1, T, N]`` in the reference frame of
    each timestep), ``extrinsics [V, T, 3, 4]`` (relative to that reference camera) and
    ``intrinsics [V, T, 3, 3]`` (as predicted, pixel centres at +0.5 like the unprojection; non-finite
    or non-positive predicted focal lengths, which only an untrained model produces, are replaced by
    a 60 degree field of view).
    """
    out = model(frames[None])
    g = gaussians_in_reference_frame(out.gaussians, out.extrinsics[:, 0], torch.ones(1, device=frames.device))
    K = out.intrinsics[0].clone()  # already pixel centres at +0.5 (recon.geometry: one convention), no shift
    focal = K[..., [0, 1], [0, 1]]
    bad = ~(torch.isfinite(focal) & (focal > 0))
    if bool(bad.any()):
        W = frames.shape[-1]
        log.warning("predicted focal lengths invalid for %d of %d cameras (untrained model?); renders use a 60 degree FoV there",
                    int(bad.any(-1).sum()), bad.shape[0] * bad.shape[1])
        focal = torch.where(bad, torch.full_like(focal, W / 2 / math.tan(math.radians(30))), focal)
        K[..., 0, 0], K[..., 1, 1] = focal[..., 0], focal[..., 1]
    return {"gaussians": g, "extrinsics": relative_extrinsics(out.extrinsics, out.extrinsics[:, :1])[0], "intrinsics": K}


def export_scene(model: torch.nn.Module, frames: torch.Tensor, out_dir: str, path_frames: int = 16, time: int = 0, fps: float = 8.0,
                 background: Optional[list[float]] = None) -> list[str]:
    """Reconstruct ``frames [V, T, 3, H, W]`` (V >= 1 input views) and write the files of the module
    docstring to ``out_dir`` (any fsspec URL). Returns the URLs written."""
    V, T, _, H, W = frames.shape
    if not 0 <= time < T:
        raise ValueError(f"scene_export.time {time} outside the {T} timesteps")
    rec = reconstruct(model, frames)
    g, ext, K = rec["gaussians"], rec["extrinsics"], rec["intrinsics"]
    path_ext, path_K = camera_path(ext[:, time], K[:, time], torch.linspace(0, V - 1, path_frames, device=frames.device))
    g_time = type(g)(*(x[:, time:time + 1] for x in (g.means, g.quats, g.scales, g.opacities, g.colors)))
    novel_views = render_views(g_time, path_ext[None, :, None], path_K[None, :, None], H, W, background)[0, :, 0]
    mid = min(0.5, V - 1.0)
    times = [camera_path(ext[:, t], K[:, t], torch.tensor([mid], device=frames.device)) for t in range(T)]
    t_ext, t_K = torch.cat([e for e, _ in times])[None, None], torch.cat([k for _, k in times])[None, None]
    novel_times = render_views(g, t_ext, t_K, H, W, background)[0, 0]
    per_t = [
        {"means": g.means[0, t], "quats": g.quats[0, t], "scales": g.scales[0, t].clamp(min=1e-12),
         "opacities": g.opacities[0, t], "colors": g.colors[0, t].clamp(0, 1)}
        for t in range(T)
    ]
    cameras = {"extrinsics": ext[:, 0], "intrinsics": K[:, 0], "width": W, "height": H}
    renders = {"novel_views": novel_views.permute(0, 2, 3, 1), "novel_times": novel_times.permute(0, 2, 3, 1)}
    return export_sequence(out_dir, per_t, cameras, renders, fps)


# -------------------------------------------------------------------------------- input frames
def select_times(num_frames: int, stride: int) -> list[int]:
    """Frame indices the reconstructor sees: every ``stride``-th of ``num_frames`` (``0, stride, ...``)."""
    if stride < 1 or num_frames < 1:
        raise ValueError(f"frame stride {stride} and frame count {num_frames} must be >= 1")
    return list(range(0, num_frames, stride))


def fit_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Frames ``[..., 3, H, W]`` -> ``[..., 3, h, w]`` for ``size = (h, w)``, resized (aspect kept) and
    centre-cropped exactly as the training data (:class:`fourd.data.transforms.ResizeCrop`); h and w
    must be multiples of the reconstructor's patch size 14."""
    h, w = size
    if h % 14 or w % 14:
        raise ValueError(f"reconstructor input size {h}x{w} must be multiples of the patch size 14")
    return ResizeCrop.plan(tuple(frames.shape[-2:]), (h, w), "center").frames(frames)


def export_grid(model: torch.nn.Module, frames: torch.Tensor, out_dir: str, frame_stride: int = 4, size: tuple[int, int] = (294, 518),
                path_frames: int = 16, time: int = 0, fps: float = 8.0, background: Optional[list[float]] = None) -> int:
    """Reconstruct a generated grid ``frames [V, F, 3, H, W]`` in [0, 1]: every ``frame_stride``-th
    frame (:func:`select_times`), fitted to ``size`` (:func:`fit_frames`), moved to the model's device
    and dtype, then :func:`export_scene` into ``out_dir``. Returns the number of timesteps T."""
    p = next(model.parameters())
    grid = fit_frames(frames[:, select_times(frames.shape[1], frame_stride)], size)
    export_scene(model, grid.to(p.device, p.dtype), out_dir, path_frames, time, fps, background)
    return grid.shape[1]
