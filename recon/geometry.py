"""Camera geometry for the reconstructor: the VGGT pose encoding, unprojection, projection
(quaternion conversions live in :mod:`fourd.rotations`).

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

from fourd.rotations import matrix_to_quat_xyzw, quat_xyzw_to_matrix

__all__ = [
    "POSE_ENCODING_DIM",
    "pose_encoding_to_cameras",
    "cameras_to_pose_encoding",
    "pixel_grid",
    "unproject_depth",
    "project_points",
    "camera_to_world_rotation",
    "cameras_from_points",
]

POSE_ENCODING_DIM = 9


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


def cameras_from_points(world_points: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Camera-from-world extrinsics that best map a point map onto its own depth (least squares,
    rigid: Kabsch / Procrustes, no scale), one per view: the cameras a point map implies.

    Args:
        world_points: ``[..., H, W, 3]`` world points of each pixel.
        depth: ``[..., H, W]`` z-depth of the same pixels (unprojected with ``intrinsics`` and identity
            extrinsics to camera points).
        intrinsics: ``[..., 3, 3]`` in pixels.
    Returns:
        ``[..., 3, 4]`` ``[R | t]`` minimising ``sum ||R X + t - X_cam||^2`` over the pixels.
    """
    identity = torch.eye(3, 4, dtype=depth.dtype, device=depth.device).expand(*depth.shape[:-2], 3, 4)
    cam = unproject_depth(depth, identity, intrinsics).flatten(-3, -2)  # [..., H*W, 3]
    world = world_points.flatten(-3, -2).to(depth.dtype)
    mc, mw = cam.mean(-2, keepdim=True), world.mean(-2, keepdim=True)
    cov = (cam - mc).transpose(-1, -2) @ (world - mw)  # [..., 3, 3]: sum of X_cam X_world^T (centred)
    U, _, Vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.det(U @ Vh))  # a reflection becomes the nearest rotation
    D = torch.diag_embed(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1))
    R = U @ D @ Vh
    t = mc.squeeze(-2) - (R @ mw.transpose(-1, -2)).squeeze(-1)
    return torch.cat([R, t[..., None]], -1)
