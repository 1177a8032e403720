"""Gaussian head: a DPT head (depth-head hyper-parameters) predicting per-pixel 3D Gaussians.

Output channels (14, paper App. C): ``[0:3]`` centre refinement, ``[3]`` opacity, ``[4:7]`` scales,
``[7:11]`` rotation quaternion (wxyz), ``[11:14]`` colour offset. One Gaussian per input pixel.

Parameterisation (``d`` = predicted depth of the pixel, ``f = sqrt(fx * fy)`` its focal length in
pixels, so ``d / f`` is the pixel's footprint in world units; ``R`` = world-from-camera rotation):

- centre = ``unproject(depth, cameras)`` (pixel centres at +0.5, principal point ``(W/2, H/2)``:
  ``recon.geometry``'s one convention; world = the first camera of the set)
  ``+ R (offset_scale * d * raw[0:3])``: the refinement is predicted in the camera frame in units of
  depth (Splatt3r-style residual), so it is scale-equivariant like VGGT's normalised geometry. With
  ``cfg.detach_depth`` the depth enters the centre without gradient (Splatt3r).
- opacity = ``sigmoid(raw[3])``.
- scales = ``(d / f).detach() * softplus(raw[4:7])`` (linear, positive; in pixel footprints, the
  footprint being a fixed unit rather than a path for gradients into depth).
- rotation = ``q(R) * normalize(raw[7:11])`` (wxyz; predicted in the camera frame).
- colour = input RGB + ``raw[11:14]``, **not clamped** (so the offset keeps its gradient; a renderer
  or exporter clamps where it needs to).

Initialisation (the last 1x1 conv) so training starts stable: position and colour weights and
biases are zero (centres start exactly at the unprojected depth, colours exactly at the input RGB);
the other weights are the default init times ``init_weight_gain`` (0.1: small but non-zero, so the
rest of the head receives gradients from the first step); biases give opacity ``init_opacity``
(0.1, as Splatt3r's bias -2), scales ``init_scale_px`` (0.5) pixel footprints (cf. AnySplat's
0.001 * softplus at unit scene scale), and the identity rotation ``(1, 0, 0, 0)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fourd.rotations import matrix_to_quat_wxyz, quat_multiply_wxyz
from fourd.sharded import gathered
from recon.geometry import camera_to_world_rotation, unproject_depth

from .config import GaussianHeadConfig
from .dpt import DPTHead

__all__ = ["GAUSSIAN_CHANNELS", "GaussianHead", "Gaussians"]

GAUSSIAN_CHANNELS = 14
_POS, _OPACITY, _SCALE, _ROT, _COLOR = slice(0, 3), slice(3, 4), slice(4, 7), slice(7, 11), slice(11, 14)


@dataclass
class Gaussians:
    """A set of 3D Gaussians; ``...`` are leading dims (``[B, T, N]`` for the reconstructor output).

    means ``[..., 3]`` world; quats ``[..., 4]`` unit wxyz; scales ``[..., 3]`` linear (world units);
    opacities ``[...]`` in (0, 1); colors ``[..., 3]`` RGB (nominally [0, 1], not clamped).
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor


class GaussianHead(DPTHead):
    """DPT head with 14 output channels plus the Gaussian parameterisation (module docstring).

    Args:
        dim_in, patch_size, features, out_channels, layers, head_hidden: as :class:`DPTHead`.
        cfg: activation/initialisation constants.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int,
        features: int,
        out_channels: Sequence[int],
        layers: Sequence[int],
        head_hidden: int,
        cfg: GaussianHeadConfig,
    ) -> None:
        super().__init__(dim_in, patch_size, GAUSSIAN_CHANNELS, features, out_channels, layers, head_hidden=head_hidden)
        self.cfg = cfg
        self._init_output_layer()

    @torch.no_grad()
    def _init_output_layer(self) -> None:
        last: nn.Conv2d = self.scratch.output_conv2[-1]
        bias = torch.zeros(GAUSSIAN_CHANNELS)
        bias[_OPACITY] = math.log(self.cfg.init_opacity / (1 - self.cfg.init_opacity))
        bias[_SCALE] = math.log(math.expm1(self.cfg.init_scale_px))
        bias[_ROT] = torch.tensor([1.0, 0.0, 0.0, 0.0])
        with gathered(last.parameters()):  # under ZeRO-3 construction the layer is partitioned already
            last.weight.mul_(self.cfg.init_weight_gain)
            last.weight[_POS].zero_()
            last.weight[_COLOR].zero_()
            last.bias.copy_(bias)

    def to_gaussians(
        self, raw: torch.Tensor, rgb: torch.Tensor, depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor
    ) -> Gaussians:
        """Per-pixel Gaussians of a batch of frames.

        Args:
            raw: ``[F, 14, H, W]`` head output. rgb: ``[F, 3, H, W]`` input images in [0, 1].
            depth: ``[F, H, W]`` predicted depth. extrinsics: ``[F, 3, 4]``. intrinsics: ``[F, 3, 3]``.
        Returns:
            :class:`Gaussians` with leading dims ``[F, H, W]``.
        """
        raw = raw.permute(0, 2, 3, 1)
        rot_c2w = camera_to_world_rotation(extrinsics)
        d = depth[..., None]
        centre_depth = depth.detach() if self.cfg.detach_depth else depth  # Splatt3r detaches its points
        offset_cam = self.cfg.offset_scale * centre_depth[..., None] * raw[..., _POS]
        offset = (offset_cam[..., None, :] * rot_c2w[:, None, None]).sum(-1)
        means = unproject_depth(centre_depth, extrinsics, intrinsics) + offset
        focal = (intrinsics[:, 0, 0] * intrinsics[:, 1, 1]).sqrt()[:, None, None, None]
        scales = (d / focal).detach() * F.softplus(raw[..., _SCALE])
        q_c2w = matrix_to_quat_wxyz(rot_c2w)[:, None, None]
        quats = F.normalize(quat_multiply_wxyz(q_c2w, F.normalize(raw[..., _ROT], dim=-1)), dim=-1)
        return Gaussians(
            means=means,
            quats=quats,
            scales=scales,
            opacities=torch.sigmoid(raw[..., 3]),
            colors=rgb.permute(0, 2, 3, 1) + raw[..., _COLOR],
        )
