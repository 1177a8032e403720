"""Camera geometry for the reconstructor: quaternions, the VGGT pose encoding, unprojection.

Conventions (project-wide, matching VGGT):

- Extrinsics are camera-from-world ``[R | t]`` of shape ``[..., 3, 4]`` (OpenCV: x right, y down,
  z forward); a world point ``X`` maps to camera coordinates ``R X + t``.
- Intrinsics ``[..., 3, 3]`` are in pixels: ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.
- Pixel centres at +0.5 (one convention for the whole project: data, unprojection, training
  targets, renderer, export): pixel ``(i, j)`` (column, row) covers ``[i, i + 1) x [j, j + 1)`` and
  its centre is ``(u, v) = (i + 0.5, j + 0.5)``. The principal point of a centred camera is
  ``(W / 2, H / 2)``, which is what VGGT's pose encoding decodes to: its symmetric field of view
  ``fx = (W / 2) / tan(fov_w / 2)`` spans the pixel edges 0 and W. (Official VGGT unprojects the
  integer index ``i`` with that principal point, half a pixel off its own frustum and off gsplat's
  pixel centres; we do not.)
- The pose encoding ``absT_quaR_FoV`` is ``[t (3), quaternion xyzw (4), fov_h, fov_w]`` (radians),
  with ``fy = (H / 2) / tan(fov_h / 2)`` and ``fx = (W / 2) / tan(fov_w / 2)``.
- Gaussian quaternions are ``wxyz``; the pose encoding's quaternion is ``xyzw`` (VGGT's choice).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "POSE_ENCODING_DIM",
    "quat_xyzw_to_matrix",
    "matrix_to_quat_xyzw",
    "quat_wxyz_to_matrix",
    "matrix_to_quat_wxyz",
    "quat_multiply_wxyz",
    "pose_encoding_to_cameras",
    "cameras_to_pose_encoding",
    "pixel_grid",
    "unproject_depth",
    "project_points",
    "camera_to_world_rotation",
]

POSE_ENCODING_DIM = 9


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


def pose_encoding_to_cameras(pose_enc: torch.Tensor, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``absT_quaR_FoV`` pose encodings into cameras.

    Args:
        pose_enc: ``[..., 9]`` = translation (3), quaternion xyzw (4), fov_h, fov_w (radians).
        image_hw: ``(H, W)`` of the images in pixels.
    Returns:
        extrinsics ``[..., 3, 4]`` camera-from-world, intrinsics ``[..., 3, 3]`` in pixels with the
        principal point at ``(W / 2, H / 2)``.
    """
    H, W = image_hw
    rot = quat_xyzw_to_matrix(pose_enc[..., 3:7])
    extrinsics = torch.cat([rot, pose_enc[..., :3, None]], dim=-1)
    fy = (H / 2.0) / torch.tan(pose_enc[..., 7] / 2.0)
    fx = (W / 2.0) / torch.tan(pose_enc[..., 8] / 2.0)
    zeros = torch.zeros_like(fx)
    ones = torch.ones_like(fx)
    intrinsics = torch.stack(
        [fx, zeros, zeros + W / 2.0, zeros, fy, zeros + H / 2.0, zeros, zeros, ones], -1
    ).reshape(*fx.shape, 3, 3)
    return extrinsics, intrinsics


def cameras_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Encode cameras as ``absT_quaR_FoV`` (the inverse of :func:`pose_encoding_to_cameras`).

    Args:
        extrinsics: ``[..., 3, 4]`` camera-from-world.
        intrinsics: ``[..., 3, 3]`` in pixels (only ``fx``, ``fy`` are used; the encoding assumes a
            centred principal point).
        image_hw: ``(H, W)`` in pixels.
    Returns:
        ``[..., 9]`` pose encodings (quaternion xyzw with ``w >= 0``, fields of view in radians).
    """
    H, W = image_hw
    quat = matrix_to_quat_xyzw(extrinsics[..., :3, :3])
    fov_h = 2.0 * torch.atan((H / 2.0) / intrinsics[..., 1, 1])
    fov_w = 2.0 * torch.atan((W / 2.0) / intrinsics[..., 0, 0])
    return torch.cat([extrinsics[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1)


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates ``[H, W, 2]`` as ``(u, v)`` = (column + 0.5, row + 0.5), the project's convention."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5, torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def camera_to_world_rotation(extrinsics: torch.Tensor) -> torch.Tensor:
    """World-from-camera rotation ``R^T`` ``[..., 3, 3]`` of camera-from-world extrinsics ``[..., 3, 4]``."""
    return extrinsics[..., :3, :3].transpose(-1, -2)


def unproject_depth(depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Lift a depth map to world points.

    Pixel ``(u, v)`` (its centre, ``(column + 0.5, row + 0.5)``, :func:`pixel_grid`) with depth ``d`` (z in the camera
    frame) becomes the camera point ``d * ((u - cx) / fx, (v - cy) / fy, 1)`` and the world point
    ``R^T (X_cam - t)``.

    Args:
        depth: ``[..., H, W]`` z-depth in world units.
        extrinsics: ``[..., 3, 4]`` camera-from-world.
        intrinsics: ``[..., 3, 3]`` in pixels.
    Returns:
        ``[..., H, W, 3]`` world points.
    """
    H, W = depth.shape[-2:]
    uv = pixel_grid(H, W, device=depth.device, dtype=depth.dtype)
    fx, fy = intrinsics[..., 0, 0, None, None], intrinsics[..., 1, 1, None, None]
    cx, cy = intrinsics[..., 0, 2, None, None], intrinsics[..., 1, 2, None, None]
    cam = torch.stack([(uv[..., 0] - cx) / fx * depth, (uv[..., 1] - cy) / fy * depth, depth], dim=-1)
    rot_t = camera_to_world_rotation(extrinsics)[..., None, None, :, :]
    trans = extrinsics[..., None, None, :3, 3]
    return ((cam - trans)[..., None, :] * rot_t).sum(-1)


def project_points(points: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into a camera.

    Args:
        points: ``[..., N, 3]`` world points.
        extrinsics: ``[..., 3, 4]`` camera-from-world.
        intrinsics: ``[..., 3, 3]`` in pixels.
    Returns:
        pixels ``[..., N, 2]`` as ``(u, v)`` (pixel ``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)``), and
        z-depth ``[..., N]``.
    """
    cam = points @ extrinsics[..., :3, :3].transpose(-1, -2) + extrinsics[..., None, :3, 3]
    pix = cam @ intrinsics.transpose(-1, -2)
    return pix[..., :2] / pix[..., 2:3], cam[..., 2]
