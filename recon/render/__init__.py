"""Gaussian rendering: :func:`render_gaussians` with a pure-PyTorch and a gsplat (CUDA) backend.

Both follow gsplat's conventions: OpenCV world-to-camera ``viewmats``, intrinsics in pixels,
pixel centres at ``+0.5``, quaternions wxyz, linear scales and opacities, EWA projection with
``eps2d`` dilation, front-to-back compositing with ``alpha = min(0.999, o exp(-0.5 dᵀΣ⁻¹d))``.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch

from .gsplat_backend import gsplat_available, rasterize_gsplat
from .torch_rasterizer import project_gaussians, rasterize_torch

__all__ = ["render_gaussians", "select_backend", "rasterize_torch", "rasterize_gsplat", "project_gaussians"]

Backend = Literal["auto", "torch", "gsplat"]


def select_backend(device: torch.device, dtype: torch.dtype, backend: Backend = "auto") -> str:
    """Resolve ``backend``: "auto" is "gsplat" for float32 CUDA tensors when gsplat imports, else "torch".

    Asking for "gsplat" where it cannot run raises a one-line error.
    """
    if backend == "torch":
        return "torch"
    usable = device.type == "cuda" and dtype == torch.float32 and gsplat_available()
    if backend == "gsplat":
        if not usable:
            raise RuntimeError(
                f"backend='gsplat' needs float32 CUDA tensors and the gsplat package (got {device}, {dtype}, "
                f"gsplat {'present' if gsplat_available() else 'missing'}); use backend='torch' or 'auto'"
            )
        return "gsplat"
    if backend != "auto":
        raise ValueError(f"unknown render backend {backend!r}: expected 'auto', 'torch' or 'gsplat'")
    return "gsplat" if usable else "torch"


def render_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: Optional[torch.Tensor] = None,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render 3D Gaussians into cameras; differentiable w.r.t. every Gaussian parameter.

    Args:
        means: ``[N, 3]`` (or ``[B, N, 3]``) centres in world units.
        quats: ``[N, 4]`` rotations, wxyz, normalised inside.
        scales: ``[N, 3]`` linear standard deviations (world units).
        opacities: ``[N]`` linear, in [0, 1].
        colors: ``[N, D]`` (or ``[C, N, D]`` per camera) colours, composited as given.
        viewmats: ``[C, 4, 4]`` world-to-camera matrices, OpenCV convention.
        Ks: ``[C, 3, 3]`` intrinsics in pixels.
        width, height: output size in pixels.
        near_plane, far_plane: Gaussians whose camera z is outside ``(near, far)`` are culled.
        eps2d: screen-space dilation (pixels²) added to each 2D covariance.
        backgrounds: ``[C, D]`` colour where the Gaussians leave transmittance, or None (black).
        backend: "auto" | "torch" | "gsplat" (see :func:`select_backend`).
    With a leading batch dimension ``B`` on every argument (Gaussians, cameras and backgrounds),
    the batch elements are rendered one after the other and the outputs gain that dimension.
    Returns:
        ``colors [C, H, W, D]``, ``alphas [C, H, W, 1]``, ``depth [C, H, W, 1]`` (expected camera z).
    """
    if means.dim() == 3:
        per_item = [
            render_gaussians(
                means[b], quats[b], scales[b], opacities[b], colors[b], viewmats[b], Ks[b], width, height,
                near_plane, far_plane, eps2d, None if backgrounds is None else backgrounds[b], backend,
            )
            for b in range(means.shape[0])
        ]
        return tuple(torch.stack(parts) for parts in zip(*per_item))
    if means.dim() != 2 or means.shape[-1] != 3:
        raise ValueError(f"means must be [N, 3] or [B, N, 3], got {tuple(means.shape)}")
    rasterize = rasterize_gsplat if select_backend(means.device, means.dtype, backend) == "gsplat" else rasterize_torch
    return rasterize(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, backgrounds=backgrounds,
    )
