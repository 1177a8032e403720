"""The camera head's output activation for the ``absT_quaR_FoV`` pose encoding.

Layout ``[t (3), quaternion xyzw (4), fov_h, fov_w]`` (see :mod:`recon.geometry` for decoding it
into extrinsics/intrinsics). VGGT's activations: translation linear, quaternion linear (normalised
only when decoded), fields of view ReLU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from recon.geometry import POSE_ENCODING_DIM

__all__ = ["POSE_ENCODING_DIM", "activate_pose_encoding"]


def activate_pose_encoding(raw: torch.Tensor) -> torch.Tensor:
    """``raw`` ``[..., 9]`` -> activated pose encoding ``[..., 9]`` (fields of view made non-negative)."""
    return torch.cat([raw[..., :7], F.relu(raw[..., 7:])], dim=-1)
