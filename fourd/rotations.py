"""Rotations as quaternions and matrices, one place for every package (viewer, formats, reconstructor).

Two component orders are in use: Gaussian splats and PLY files store ``wxyz`` (gsplat, 3DGS); VGGT's
pose encoding stores ``xyzw``. Matrices are ``[..., 3, 3]`` and act on column vectors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["quat_wxyz_to_matrix", "matrix_to_quat_wxyz", "quat_xyzw_to_matrix", "matrix_to_quat_xyzw", "quat_multiply_wxyz"]


def quat_wxyz_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from (not necessarily unit) quaternions.

    Args:
        quat: ``[..., 4]`` quaternions ``(w, x, y, z)``.
    Returns:
        ``[..., 3, 3]`` rotation matrices.
    """
    w, x, y, z = quat.unbind(-1)
    s = 2.0 / (quat * quat).sum(-1)
    rows = (
        1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
        s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
        s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
    )
    return torch.stack(rows, -1).reshape(*quat.shape[:-1], 3, 3)


def matrix_to_quat_wxyz(rot: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(w, x, y, z)`` with ``w >= 0`` from rotation matrices ``[..., 3, 3]``.

    Uses the numerically stable branch (largest of ``|w|, |x|, |y|, |z|``) per matrix.
    Returns ``[..., 4]``.
    """
    m = rot.reshape(*rot.shape[:-2], 9).unbind(-1)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    four_sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    two_abs = torch.sqrt(four_sq.clamp(min=0))
    candidates = torch.stack(
        [
            torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21], -1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], -1),
        ],
        -2,
    ) / (2 * two_abs.clamp(min=0.1))[..., None]
    best = two_abs.argmax(-1)
    quat = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quat = F.normalize(quat, dim=-1)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quat_xyzw_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` from quaternions ``[..., 4]`` in VGGT's ``(x, y, z, w)`` order."""
    return quat_wxyz_to_matrix(quat.roll(1, dims=-1))


def matrix_to_quat_xyzw(rot: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``[..., 4]`` in ``(x, y, z, w)`` order (``w >= 0``) from ``[..., 3, 3]``."""
    return matrix_to_quat_wxyz(rot).roll(-1, dims=-1)


def quat_multiply_wxyz(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of ``wxyz`` quaternions ``[..., 4]`` (broadcasting); rotation ``b`` then ``a``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )
