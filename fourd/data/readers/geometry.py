"""Camera conventions of public datasets -> the scene format's (OpenCV camera-from-world, pixel K).

Conventions handled here (each reader says which it uses):

- **OpenCV** axes: x right, y down, z forward (COLMAP, RealEstate10K, our format).
- **OpenGL / Blender** axes: x right, y up, z backward (nerfstudio ``transforms.json``, Blender and
  Kubric cameras, most Objaverse render scripts). The same camera in OpenCV axes has its y and z
  axes negated: ``c2w_cv = c2w_gl @ diag(1, -1, -1)``.
- Pixel coordinates are continuous with the centre of pixel (row i, col j) at ``(j + 0.5, i + 0.5)``
  (COLMAP, nerfstudio, Kubric and our format agree), so intrinsics carry over unchanged.

All functions take and return float64 numpy arrays (the readers' working precision); the writer
stores float32.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fourd.rotations import quat_wxyz_to_matrix

__all__ = ["GL_TO_CV", "invert_pose", "c2w_to_w2c", "quat_wxyz_to_rotation", "pinhole_K", "undistort_image",
           "ray_distance_to_z", "sparse_depth"]

GL_TO_CV = np.diag([1.0, -1.0, -1.0])  # right-multiply a camera-to-world rotation: OpenGL/Blender axes -> OpenCV axes


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Invert a rigid transform ``[..., 3, 4]`` or ``[..., 4, 4]`` (``[R | t]`` -> ``[R^T | -R^T t]``); returns ``[..., 3, 4]``."""
    R, t = pose[..., :3, :3], pose[..., :3, 3:]
    Rt = np.swapaxes(R, -1, -2)
    return np.concatenate([Rt, -Rt @ t], axis=-1)


def c2w_to_w2c(c2w: np.ndarray, convention: str) -> np.ndarray:
    """Camera-to-world ``[..., 3|4, 4]`` in ``convention`` ("opencv" | "opengl"; "blender" = "opengl")
    -> OpenCV camera-from-world ``[..., 3, 4]``."""
    c2w = np.asarray(c2w, dtype=np.float64)[..., :3, :4]
    if convention in ("opengl", "blender"):
        c2w = np.concatenate([c2w[..., :3, :3] @ GL_TO_CV, c2w[..., :3, 3:]], axis=-1)
    elif convention != "opencv":
        raise ValueError(f"camera convention must be 'opencv', 'opengl' or 'blender', got {convention!r}")
    return invert_pose(c2w)


def quat_wxyz_to_rotation(quat: Sequence[float]) -> np.ndarray:
    """Rotation matrix ``[..., 3, 3]`` of quaternions ``[..., 4]`` in ``(w, x, y, z)`` order (COLMAP, Kubric)."""
    return quat_wxyz_to_matrix(torch.as_tensor(np.asarray(quat, dtype=np.float64))).numpy()


def pinhole_K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The pixel intrinsics matrix ``[3, 3]``."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def undistort_image(image: np.ndarray, K: np.ndarray, radial: Sequence[float] = (), tangential: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """Resample ``image`` uint8 ``[H, W, C]`` taken through OpenCV's radial-tangential lens model into
    the ideal pinhole camera with the same ``K``.

    ``radial`` = (k1, k2[, k3]) and ``tangential`` = (p1, p2) act on normalised coordinates ``(x, y)``
    as in OpenCV / COLMAP ``OPENCV`` (``SIMPLE_RADIAL`` / ``RADIAL`` are k1[, k2] with p = 0):
    ``x_d = x (1 + k1 r^2 + k2 r^4 + k3 r^6) + 2 p1 x y + p2 (r^2 + 2 x^2)`` and the same for y with
    p1, p2 swapped. Every output pixel samples its distorted position (bilinear; border pixels
    repeated where that position falls outside the image).
    """
    H, W = image.shape[:2]
    k = list(radial) + [0.0] * (3 - len(radial))
    p1, p2 = tangential
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    r2 = x * x + y * y
    scale = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
    xd = x * scale + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * scale + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    ud, vd = K[0, 0] * xd + K[0, 2], K[1, 1] * yd + K[1, 2]
    grid = torch.from_numpy(np.stack([2 * ud / W - 1, 2 * vd / H - 1], -1)).float()[None]  # [1, H, W, 2]
    src = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def ray_distance_to_z(distance: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Distance to the camera centre ``[H, W]`` (Kubric's "depth") -> z-depth ``[H, W]`` (our format's),
    along each pixel centre's ray through pinhole ``K``."""
    H, W = distance.shape
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    norm = np.sqrt(((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2 + 1.0)
    return (distance / norm).astype(np.float32)


def sparse_depth(points: np.ndarray, extrinsics: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Sparse z-depth ``[H, W]`` float32 (0 = unknown) of world ``points [N, 3]`` seen by camera
    ``extrinsics [3, 4]`` (OpenCV camera-from-world) with pixel intrinsics ``K`` on an image of
    ``size`` (H, W): each point in front of the camera marks the pixel it projects into; the nearest
    point wins where several land in one pixel."""
    H, W = size
    depth = np.full((H, W), np.inf)
    if len(points):
        cam = points @ extrinsics[:, :3].T + extrinsics[:, 3]
        z = cam[:, 2]
        front = z > 1e-9
        uv = cam[front] @ K.T
        u, v, z = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2], z[front]
        inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        np.minimum.at(depth, (v[inside].astype(np.int64), u[inside].astype(np.int64)), z[inside])
    depth[np.isinf(depth)] = 0.0
    return depth.astype(np.float32)
