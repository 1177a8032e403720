"""Export one reconstructed scene: per-timestep 3DGS PLYs, cameras.json and novel-view / novel-time mp4s.

Used by ``launch/train_recon.py`` after training and in ``mode=export``::

    python launch/train_recon.py mode=export recon_model.weights=outputs/.../export/model.safetensors \
        scene_export.scene=/data/generated/scene_0001 scene_export.out=/tmp/scene_0001

Everything is in the predicted frame of the reconstructor: the reference camera (input view 0 at each
timestep; with camera token replacement one camera for all timesteps) is the identity, scale as
predicted. No ground truth is needed. Files (``recon.export.export_sequence``):

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
from typing import Any, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from recon.export import export_sequence
from recon.train_task import LOADER_KEYS, ReconTask, gaussians_in_reference_frame, relative_extrinsics, render_views, split_views

__all__ = ["camera_path", "reconstruct", "export_scene", "export_from_config"]

log = logging.getLogger(__name__)


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


@torch.no_grad()
def reconstruct(model: torch.nn.Module, frames: torch.Tensor) -> dict[str, Any]:
    """Run the reconstructor on ``frames [V, T, 3, H, W]`` in [0, 1].

    Returns ``gaussians`` (:class:`recon.model.Gaussians` ``[1, T, N]`` in the reference frame of
    each timestep), ``extrinsics [V, T, 3, 4]`` (relative to that reference camera) and
    ``intrinsics [V, T, 3, 3]`` (pixel centres at +0.5; non-finite or non-positive predicted focal
    lengths, which only an untrained model produces, are replaced by a 60 degree field of view).
    """
    out = model(frames[None])
    g = gaussians_in_reference_frame(out.gaussians, out.extrinsics[:, 0], torch.ones(1, device=frames.device))
    K = out.intrinsics[0].clone()
    K[..., :2, 2] += 0.5
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


def _scene_frames(cfg: DictConfig, task: ReconTask) -> torch.Tensor:
    """Input frames ``[V, T, 3, H, W]`` of the scene named by ``scene_export`` (see configs/train_recon.yaml)."""
    node, data = cfg.scene_export, cfg.recon_data
    if node.scene is None:
        sample = task.scenes.sample(node.index, int(data.num_frames), False, held_out=True)
        inputs, _ = split_views(sample["frames"].shape[0], data.input_views)
        return sample["frames"][inputs]
    from fourd.data import read_scene

    frames = read_scene(node.scene, with_depth=False, with_masks=False).frames
    if node.views is not None:
        frames = frames[list(node.views)]
    V, T, C, H, W = frames.shape
    if (H, W) != (data.height, data.width):
        frames = F.interpolate(frames.flatten(0, 1), size=(data.height, data.width), mode="bilinear", antialias=True, align_corners=False)
        frames = frames.reshape(V, T, C, data.height, data.width).clamp(0, 1)
    return frames


def export_from_config(cfg: DictConfig, weights: str, out_dir: str) -> list[str]:
    """Load the reconstructor from ``weights`` (config ``recon_model`` minus its loader keys) and export
    the configured scene to ``out_dir``; returns the URLs written."""
    from fourd.train.distributed import dist_env
    from recon.model import load_reconstructor

    node = OmegaConf.to_container(cfg.recon_model, resolve=True)
    for key in LOADER_KEYS:
        node.pop(key)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_reconstructor(node, weights=weights).to(device).eval()
    frames = _scene_frames(cfg, ReconTask(cfg, dist_env())).to(device)
    e = cfg.scene_export
    written = export_scene(model, frames, out_dir, e.path_frames, e.time, e.fps, list(cfg.render.background))
    log.info("exported scene (%d views, %d timesteps) to %s", frames.shape[0], frames.shape[1], out_dir)
    return written
