"""The CUDA path of :func:`recon.render.render_gaussians`: a thin mapping onto ``gsplat.rasterization``.

gsplat is an optional CUDA extra (``pip install video4d[cuda]``); it is imported only when this
backend is used. The mapping keeps the torch rasterizer's conventions exactly: same near/far
planes and ``eps2d``, ``rasterize_mode="classic"`` (no opacity compensation), colours given
directly (``sh_degree=None``), ``render_mode="RGB+ED"`` (gsplat then pads the background with a
zero depth channel and divides the accumulated depth by ``max(alpha, 1e-10)``), and gsplat's fixed
1e-4 transmittance stop (the torch default). Not exercised on CPU machines: the comparison test in
``tests/test_render_gsplat.py`` runs only where CUDA and gsplat exist.
"""
from __future__ import annotations

import importlib.util
from typing import Optional

import torch

__all__ = ["gsplat_available", "rasterize_gsplat"]


def gsplat_available() -> bool:
    """True when the ``gsplat`` package is importable and CUDA is available."""
    return torch.cuda.is_available() and importlib.util.find_spec("gsplat") is not None


def rasterize_gsplat(
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same arguments and outputs as :func:`recon.render.torch_rasterizer.rasterize_torch`, on CUDA.

    Shapes: means ``[N, 3]``, quats ``[N, 4]`` wxyz, scales ``[N, 3]`` linear, opacities ``[N]``,
    colors ``[N, D]`` or ``[C, N, D]``, viewmats ``[C, 4, 4]``, Ks ``[C, 3, 3]`` pixels, backgrounds
    ``[C, D]`` or None. Returns ``colors [C, H, W, D]``, ``alphas [C, H, W, 1]``,
    ``depth [C, H, W, 1]`` (expected camera z). Inputs must be float32 CUDA tensors.
    """
    from gsplat import rasterization

    rendered, alphas, _ = rasterization(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        sh_degree=None,
        backgrounds=backgrounds,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    return rendered[..., :-1], alphas, rendered[..., -1:]
