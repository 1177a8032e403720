"""Random smooth 2D homographies that turn one video into synchronized pseudo-views.

Homographies act on normalised image coordinates (x, y) in [-1, 1] (``grid_sample`` with
``align_corners=False``: -1 and 1 are the outer image edges) and map OUTPUT coordinates to the
INPUT coordinates that are sampled. A view's path is a random quadrilateral at the first and at
the last frame, interpolated with a smoothstep over time, so adjacent frames differ little.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["UNIT_CORNERS", "homography_from_corners", "random_corner_path", "homography_path", "warp_frames", "pseudo_views"]

UNIT_CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def homography_from_corners(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The homographies [..., 3, 3] (last entry 1) mapping the 4 points ``src`` [..., 4, 2] onto ``dst`` [..., 4, 2]."""
    src, dst = src.double(), dst.double()
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    A = torch.cat([rows_u, rows_v], -2)  # [..., 8, 8]
    b = torch.cat([u, v], -1)  # [..., 8]
    h = torch.linalg.solve(A, b)
    return torch.cat([h, torch.ones_like(h[..., :1])], -1).reshape(*h.shape[:-1], 3, 3).float()


def _random_quad(rng: np.random.Generator, min_scale: float, max_rotation_deg: float, jitter: float) -> np.ndarray:
    """A random sub-quadrilateral [4, 2] of the image in normalised coordinates (inside [-1, 1])."""
    scale = rng.uniform(min_scale, 1.0)
    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    quad = scale * UNIT_CORNERS.numpy() @ rot.T + rng.uniform(-jitter, jitter, (4, 2)) * scale
    room = 1.0 - np.abs(quad).max(0)  # translation that keeps every corner inside the image
    quad = quad + rng.uniform(-1.0, 1.0, 2) * np.clip(room, 0.0, None)
    return np.clip(quad, -1.0, 1.0)


def random_corner_path(num_frames: int, rng: np.random.Generator, min_scale: float = 0.7,
                       max_rotation_deg: float = 8.0, jitter: float = 0.08) -> torch.Tensor:
    """Corners [T, 4, 2] of the sampled input region per frame: a random start and end
    quadrilateral blended with a smoothstep in time (the step between adjacent frames is at most
    ``1.5 / (T - 1)`` of the start-to-end change)."""
    start = torch.tensor(_random_quad(rng, min_scale, max_rotation_deg, jitter), dtype=torch.float32)
    end = torch.tensor(_random_quad(rng, min_scale, max_rotation_deg, jitter), dtype=torch.float32)
    s = torch.linspace(0.0, 1.0, num_frames) if num_frames > 1 else torch.zeros(1)
    w = (s * s * (3 - 2 * s))[:, None, None]
    return start + w * (end - start)


def homography_path(corners: torch.Tensor) -> torch.Tensor:
    """Sampling homographies [T, 3, 3] (output -> input normalised coordinates) for corners [T, 4, 2]."""
    return homography_from_corners(UNIT_CORNERS.expand_as(corners), corners)


def warp_frames(frames: torch.Tensor, homographies: torch.Tensor) -> torch.Tensor:
    """Warp frames [T, C, H, W] by sampling homographies [T, 3, 3] -> [T, C, H, W] (bilinear, border padding)."""
    T, _, H, W = frames.shape
    ys = (torch.arange(H, dtype=torch.float32) * 2 + 1) / H - 1
    xs = (torch.arange(W, dtype=torch.float32) * 2 + 1) / W - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(1, -1, 3)  # [1, HW, 3]
    mapped = pts @ homographies.transpose(-1, -2)  # [T, HW, 3]
    grid = (mapped[..., :2] / mapped[..., 2:]).reshape(T, H, W, 2)
    return F.grid_sample(frames, grid.to(frames.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def pseudo_views(clip: torch.Tensor, num_views: int, rng: np.random.Generator, identity_first_view: bool = True,
                 **path_args) -> torch.Tensor:
    """One video ``clip [F, 3, H, W]`` -> ``num_views`` synchronized pseudo-views ``[V, F, 3, H, W]``: view
    ``v`` samples the clip through its own smooth random homography path (:func:`random_corner_path`
    with ``path_args``); with ``identity_first_view`` view 0 is the clip itself."""
    views = []
    for v in range(num_views):
        if v == 0 and identity_first_view:
            views.append(clip)
        else:
            views.append(warp_frames(clip, homography_path(random_corner_path(clip.shape[0], rng, **path_args))))
    return torch.stack(views)
