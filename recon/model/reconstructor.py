"""The feedforward 4D reconstructor: VGGT backbone + heads, extended to ``[B, V, T]`` grids.

Each timestep ``t`` of a grid is one VGGT multi-view set of the ``V`` views (view 0 is the set's
reference camera); temporal attention (``cfg.temporal``) links the sets (see ``aggregator.py``).

Camera token replacement (``cfg.camera_token_replacement``, paper §3.2): after the transformer,
the camera tokens of all views at every timestep are replaced by those of the first timestep
before the camera head, so every timestep gets the same cameras. (Implemented by running the
camera head once on the first timestep's tokens and broadcasting its output over time: the same
result, bitwise identical across timesteps, at ``1/T`` of the cost.) With it, the world frame of all
outputs is the first camera of the first timestep; without it, each timestep's outputs live in the
frame of that timestep's first camera. The DPT heads read only patch tokens and are unaffected.

Outputs are in the grid layout ``[B, V, T, ...]``; the Gaussians of all views at one timestep form
that timestep's splat set ``[B, T, N]`` with ``N = V * H * W`` ordered (view, row, column).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from recon.geometry import pose_encoding_to_cameras

from .aggregator import Aggregator
from .camera_head import CameraHead
from .config import ReconstructorConfig
from .dpt import DPTHead
from .gaussian_head import GaussianHead, Gaussians
from .track_head import TrackHead

__all__ = ["Reconstructor", "ReconstructionOutput"]


@dataclass
class ReconstructionOutput:
    """Predictions for a ``[B, V, T]`` grid of ``H x W`` images (None where the head is disabled).

    pose_enc ``[B, V, T, 9]`` (absT_quaR_FoV) and pose_enc_list (one per camera-head iteration);
    extrinsics ``[B, V, T, 3, 4]`` camera-from-world (OpenCV); intrinsics ``[B, V, T, 3, 3]`` pixels;
    depth, depth_conf ``[B, V, T, H, W]`` (depth > 0, conf > 1); world_points ``[B, V, T, H, W, 3]``
    and world_points_conf ``[B, V, T, H, W]`` (point head); gaussians with leading dims ``[B, T, N]``.
    """

    pose_enc: Optional[torch.Tensor] = None
    pose_enc_list: list[torch.Tensor] = field(default_factory=list)
    extrinsics: Optional[torch.Tensor] = None
    intrinsics: Optional[torch.Tensor] = None
    depth: Optional[torch.Tensor] = None
    depth_conf: Optional[torch.Tensor] = None
    world_points: Optional[torch.Tensor] = None
    world_points_conf: Optional[torch.Tensor] = None
    gaussians: Optional[Gaussians] = None


def _to_grid(x: torch.Tensor, B: int, T: int, V: int) -> torch.Tensor:
    """Per-frame ``[B*T*V, ...]`` (timestep-major) -> grid layout ``[B, V, T, ...]``."""
    return x.reshape(B, T, V, *x.shape[1:]).transpose(1, 2)


def _to_frames(x: torch.Tensor) -> torch.Tensor:
    """Grid layout ``[B, V, T, ...]`` -> per-frame ``[B*T*V, ...]`` (timestep-major)."""
    return x.transpose(1, 2).reshape(-1, *x.shape[3:])


class Reconstructor(nn.Module):
    """VGGT-compatible reconstructor (module names and keys equal the official ``VGGT`` model).

    Args:
        cfg: a :class:`ReconstructorConfig` (see ``config.py`` for presets).
    """

    def __init__(self, cfg: ReconstructorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = 2 * cfg.embed_dim
        dpt = dict(
            patch_size=cfg.patch_size,
            features=cfg.dpt_features,
            out_channels=cfg.dpt_out_channels,
            layers=cfg.dpt_layers,
            head_hidden=cfg.dpt_head_hidden,
        )
        self.aggregator = Aggregator(cfg)
        self.camera_head = CameraHead(dim, cfg.camera_trunk_depth, cfg.camera_heads, cfg.mlp_ratio) if cfg.enable_camera else None
        self.point_head = DPTHead(dim, output_dim=4, **dpt) if cfg.enable_point else None
        self.depth_head = DPTHead(dim, output_dim=2, **dpt) if cfg.enable_depth else None
        self.track_head = TrackHead(cfg) if cfg.enable_track else None
        self.gaussian_head = GaussianHead(dim, cfg=cfg.gaussian, **dpt) if cfg.enable_gaussian else None

    def _check(self, images: torch.Tensor) -> None:
        p = self.cfg.patch_size
        if images.dim() != 6 or images.shape[3] != 3:
            raise ValueError(f"reconstructor input must be [B, V, T, 3, H, W] frames in [0, 1], got shape {tuple(images.shape)}")
        if images.shape[-2] % p or images.shape[-1] % p:
            raise ValueError(f"reconstructor input size {tuple(images.shape[-2:])} must be a multiple of the patch size {p}")

    def forward(self, images: torch.Tensor) -> ReconstructionOutput:
        """Reconstruct a grid.

        Args:
            images: ``[B, V, T, 3, H, W]`` RGB in [0, 1]; H, W multiples of the patch size.
        Returns:
            :class:`ReconstructionOutput` (shapes in its docstring).
        """
        self._check(images)
        cfg = self.cfg
        heads = [h for h in (self.point_head, self.depth_head, self.gaussian_head) if h is not None]
        keep = sorted({cfg.depth - 1}.union(*(h.layers for h in heads)))
        tokens = dict(zip(keep, self.aggregator(images, keep)))
        # Like official VGGT, the heads run without autocast: under bf16 autocast only the backbone
        # is bf16, and cameras, depth and Gaussians are computed at the heads' parameter precision.
        head_dtype = next(next(h.parameters()) for h in (self.camera_head, *heads) if h is not None).dtype
        with torch.autocast(images.device.type, enabled=False):
            return self._heads({i: t.to(head_dtype) for i, t in tokens.items()}, images.to(head_dtype))

    def _heads(self, tokens: dict[int, torch.Tensor], images: torch.Tensor) -> ReconstructionOutput:
        """Camera, depth, point and Gaussian heads on the aggregator's kept layers
        ``{layer: [B, T, V, P, 2C]}`` for ``images [B, V, T, 3, H, W]``."""
        cfg = self.cfg
        B, V, T, _, H, W = images.shape
        start = self.aggregator.patch_start_idx
        frames = {i: t.reshape(B * T * V, *t.shape[3:]) for i, t in tokens.items()}
        out = ReconstructionOutput()
        chunk = cfg.head_chunk_size

        if self.camera_head is not None:
            cam = tokens[cfg.depth - 1][:, :, :, 0]
            if cfg.camera_token_replacement:
                cam = cam[:, :1]
            encodings = self.camera_head(cam.reshape(-1, V, cam.shape[-1]), cfg.camera_iterations)
            out.pose_enc_list = [e.reshape(B, -1, V, e.shape[-1]).expand(B, T, V, -1).transpose(1, 2) for e in encodings]
            out.pose_enc = out.pose_enc_list[-1]
            out.extrinsics, out.intrinsics = pose_encoding_to_cameras(out.pose_enc, (H, W))

        if self.depth_head is not None:
            raw = self.depth_head(frames, (H, W), start, chunk)
            depth, conf = raw[:, 0].exp(), 1 + raw[:, 1].exp()
            out.depth, out.depth_conf = _to_grid(depth, B, T, V), _to_grid(conf, B, T, V)

        if self.point_head is not None:
            raw = self.point_head(frames, (H, W), start, chunk).permute(0, 2, 3, 1)
            points = torch.sign(raw[..., :3]) * torch.expm1(raw[..., :3].abs())
            out.world_points = _to_grid(points, B, T, V)
            out.world_points_conf = _to_grid(1 + raw[..., 3].exp(), B, T, V)

        if self.gaussian_head is not None:
            raw = self.gaussian_head(frames, (H, W), start, chunk)
            rgb = images.transpose(1, 2).reshape(B * T * V, 3, H, W)
            g = self.gaussian_head.to_gaussians(raw, rgb, depth, _to_frames(out.extrinsics), _to_frames(out.intrinsics))
            out.gaussians = Gaussians(
                *(x.reshape(B, T, V * H * W, *x.shape[3:]) for x in (g.means, g.quats, g.scales, g.opacities, g.colors))
            )
        return out
