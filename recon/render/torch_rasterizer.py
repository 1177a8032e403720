"""Differentiable pure-PyTorch 3D Gaussian rasterizer with gsplat's ("classic" mode) conventions.

Runs on any device (it is the CPU path of :func:`recon.render.render_gaussians`). Conventions:
OpenCV cameras (x right, y down, z forward), world-to-camera ``viewmats``, intrinsics in pixels,
pixel ``(i, j)`` (column, row) has its centre at ``(i + 0.5, j + 0.5)``, quaternions wxyz.

Algorithm, per camera:

1. Projection (EWA): ``Σ = R S Sᵀ Rᵀ`` in world space, ``Σ_cam = W Σ Wᵀ``, ``Σ_2d = J Σ_cam Jᵀ +
   eps2d I`` with ``J`` the Jacobian of the pinhole projection at the Gaussian centre (its x/z, y/z
   clamped to the frustum widened by 30% like gsplat). Gaussians with depth outside
   ``(near_plane, far_plane)`` are culled before anything else is computed.
2. Extent: per axis ``r = ceil(k sqrt(Σ_2d[i, i]))`` pixels with ``k = min(3.33, sqrt(2 ln(255 o)))``
   (gsplat's bounds); the pixels whose centres lie in the box ``mean2d ± r`` form (pixel, Gaussian)
   pairs. Outside that box ``alpha <= o exp(-k² / 2) <= 1/255``, so the cut loses nothing that
   gsplat keeps.
3. Alpha: ``alpha = min(0.999, opacity exp(-0.5 dᵀ Σ_2d⁻¹ d))``; pairs with ``alpha < 1/255`` are
   skipped, like gsplat.
4. Compositing front to back in depth order: ``T_i = prod_{j<i} (1 - alpha_j)`` via a segmented
   cumulative sum of ``log(1 - alpha)`` in float64 over the pairs sorted by (pixel, depth); a pixel
   stops at the first Gaussian that would bring ``T`` to ``<= transmittance_threshold`` (gsplat:
   1e-4; 0 disables), that Gaussian excluded.
5. ``color = sum w_i c_i + T_final * background``, ``alpha = 1 - T_final``, expected depth
   ``sum w_i z_i / max(alpha, 1e-10)`` with ``w_i = alpha_i T_i`` (gsplat's ``RGB+ED``).

The masks (extent, thresholds, early stop) are found without autograd; gradients flow through the
kept pairs to means, quats, scales, opacities and colours.

Complexity and limits: with ``P`` = the number of (pixel, Gaussian) pairs inside the boxes
(≈ N times the mean box area), time is O(P log P) (one sort of the pairs that pass the alpha test)
and memory O(P): measured peak about 90 bytes per box pair (100k pixel-sized Gaussians at 256x256:
11M box pairs, 2.4M composited, 0.93 GB). Cameras are processed one after the other. Gaussians much larger than the
image make ``P`` approach ``N H W``: fine for small images, too much memory for large N at high
resolution (use the gsplat backend on CUDA there). No spherical harmonics (colours are given per
Gaussian, optionally per camera), pinhole cameras only, no anti-aliased mode.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from fourd.rotations import quat_wxyz_to_matrix

__all__ = ["project_gaussians", "rasterize_torch"]

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
EXTENT_SIGMAS = 3.33


def project_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EWA projection of the Gaussians in front of one camera.

    Args: ``means [N, 3]`` world units, ``quats [N, 4]`` wxyz, ``scales [N, 3]`` linear world units,
    ``viewmat [4, 4]`` world-to-camera (OpenCV), ``K [3, 3]`` pixels.
    Returns ``(ids [M], means2d [M, 2] pixels, cov2d [M, 2, 2] pixels², depths [M] camera z)`` for the
    ``M`` Gaussians with ``near_plane < z < far_plane``; ``ids`` index the input. ``cov2d`` includes
    the ``eps2d`` dilation.
    """
    R_cam, t_cam = viewmat[:3, :3], viewmat[:3, 3]
    depth_all = means.detach() @ R_cam[2].detach() + t_cam[2].detach()
    ids = torch.nonzero((depth_all > near_plane) & (depth_all < far_plane)).squeeze(1)
    p_cam = means[ids] @ R_cam.T + t_cam
    rot = quat_wxyz_to_matrix(quats[ids])
    M = R_cam @ (rot * scales[ids][:, None, :])
    cov_cam = M @ M.transpose(-1, -2)

    x, y, z = p_cam.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    margin_x, margin_y = 0.3 * 0.5 * width / fx, 0.3 * 0.5 * height / fy
    tx = z * torch.minimum(torch.maximum(x / z, -cx / fx - margin_x), (width - cx) / fx + margin_x)
    ty = z * torch.minimum(torch.maximum(y / z, -cy / fy - margin_y), (height - cy) / fy + margin_y)
    zero = torch.zeros_like(z)
    J = torch.stack(
        [torch.stack([fx / z, zero, -fx * tx / (z * z)], -1), torch.stack([zero, fy / z, -fy * ty / (z * z)], -1)],
        dim=-2,
    )
    cov2d = J @ cov_cam @ J.transpose(-1, -2) + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    return ids, means2d, cov2d, z


def _box_pairs(means2d: torch.Tensor, cov2d: torch.Tensor, opacities: torch.Tensor, width: int, height: int):
    """(Gaussian, pixel) pairs for the pixels whose centres lie in each Gaussian's extent box.

    The box half-size per axis is ``ceil(k sqrt(cov2d[i, i]))`` with ``k = min(3.33, sqrt(2 ln(255 o)))``:
    beyond it ``alpha <= o exp(-k² / 2) <= 1/255``. Returns ``(gid [P], pix [P])``: Gaussian index
    (into ``means2d``) and flat pixel index ``y*W + x``, grouped by Gaussian in input order.
    """
    device = means2d.device
    m = means2d.detach()
    k = torch.sqrt(2 * torch.log(opacities.detach() / ALPHA_MIN).clamp(min=0)).clamp(max=EXTENT_SIGMAS)
    r = torch.ceil(k[:, None] * torch.sqrt(torch.diagonal(cov2d.detach(), dim1=-2, dim2=-1)))
    last = torch.tensor([width - 1.0, height - 1.0], dtype=m.dtype, device=device)
    lo = torch.minimum(torch.ceil(m - r - 0.5).clamp(min=0), last + 1)
    hi = torch.minimum(torch.floor(m + r - 0.5), last)
    finite = torch.isfinite(m).all(1) & torch.isfinite(r).all(1)
    # Boxes are clipped to the image in floating point first: far-off or non-finite splats get an
    # empty box instead of overflowing the integer cast.
    size = torch.where(finite[:, None], (hi - lo + 1).clamp(min=0), 0).long()
    counts = size[:, 0] * size[:, 1]
    start = torch.cumsum(counts, 0) - counts
    lo = torch.where(finite[:, None], lo, 0).long()
    per_gaussian = torch.stack([lo[:, 0], lo[:, 1], size[:, 0], start])
    gid = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)
    x0, y0, wx, first = per_gaussian.index_select(1, gid)
    local = torch.arange(gid.numel(), device=device) - first
    row = torch.div(local, wx, rounding_mode="floor")
    pix = (y0 + row) * width + x0 + (local - row * wx)
    return gid, pix


def _pair_alphas(splats: torch.Tensor, gid: torch.Tensor, pix: torch.Tensor, width: int):
    """Per pair ``alpha = min(0.999, o exp(-sigma))`` and the mask ``sigma >= 0 and alpha >= 1/255``.

    ``splats [M, 6]`` holds per Gaussian (mean x, mean y, conic a, b, c, opacity), pixels.
    """
    mx, my, a, b, c, o = splats.T.contiguous().index_select(1, gid).unbind(0)
    row = torch.div(pix, width, rounding_mode="floor")
    dx = mx - (pix - row * width).to(splats.dtype) - 0.5
    dy = my - row.to(splats.dtype) - 0.5
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(o * torch.exp(-sigma), max=ALPHA_MAX)
    return alpha, (sigma >= 0) & (alpha >= ALPHA_MIN)


def _exclusive_log_transmittance(log1m: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """Per pair, ``sum`` of ``log1m`` over the earlier pairs of the same pixel (pairs grouped by pixel)."""
    _, seg_counts = torch.unique_consecutive(pix, return_counts=True)
    seg_id = torch.repeat_interleave(torch.arange(seg_counts.numel(), device=pix.device), seg_counts)
    seg_start = torch.cumsum(seg_counts, 0) - seg_counts
    excl = torch.cumsum(log1m, 0) - log1m
    return excl - excl[seg_start][seg_id]


def _contributing_pairs(splats, cov2d, width, height, transmittance_threshold):
    """The (Gaussian, pixel) pairs that gsplat would composite, sorted by pixel then Gaussian index."""
    gid, pix = _box_pairs(splats[:, :2], cov2d, splats[:, 5], width, height)
    alpha, ok = _pair_alphas(splats, gid, pix, width)
    kept = torch.nonzero(ok).squeeze(1)
    pix, order = torch.sort(pix.index_select(0, kept), stable=True)
    kept = kept.index_select(0, order)
    gid = gid.index_select(0, kept)
    if transmittance_threshold > 0:
        log1m = torch.log1p(-alpha.index_select(0, kept).double())
        log_t_next = _exclusive_log_transmittance(log1m, pix) + log1m
        active = torch.nonzero(log_t_next > math.log(transmittance_threshold)).squeeze(1)
        gid, pix = gid.index_select(0, active), pix.index_select(0, active)
    return gid, pix


def _rasterize_one(means2d, cov2d, depths, opacities, colors, width, height, background, transmittance_threshold):
    """Composite ``M`` projected Gaussians (``means2d [M, 2]``, ``cov2d [M, 2, 2]``, ``depths [M]``,
    ``opacities [M]``, ``colors [M, D]``) into one ``[H, W, D]`` / ``[H, W, 1]`` / ``[H, W, 1]`` image."""
    dtype = means2d.dtype
    order = torch.argsort(depths.detach())
    means2d, cov2d, depths, opacities, colors = (t.index_select(0, order) for t in (means2d, cov2d, depths, opacities, colors))
    det = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] * cov2d[:, 1, 0]
    conics = torch.stack([cov2d[:, 1, 1], -0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0]), cov2d[:, 0, 0]], -1) / det[:, None]
    splats = torch.cat([means2d, conics, opacities[:, None]], dim=1)
    with torch.no_grad():
        gid, pix = _contributing_pairs(splats, cov2d, width, height, transmittance_threshold)
    alpha, _ = _pair_alphas(splats, gid, pix, width)
    log1m = torch.log1p(-alpha.double())
    weights = (alpha.double() * torch.exp(_exclusive_log_transmittance(log1m, pix))).to(dtype)
    n_pix = width * height
    features = torch.cat([colors, depths[:, None]], dim=1).index_select(0, gid)
    accumulated = features.new_zeros(n_pix, features.shape[1]).index_add(0, pix, weights[:, None] * features)
    t_final = torch.exp(log1m.new_zeros(n_pix).index_add(0, pix, log1m)).to(dtype)
    out_alpha = 1.0 - t_final
    out_color = accumulated[:, :-1]
    if background is not None:
        out_color = out_color + t_final[:, None] * background
    out_depth = accumulated[:, -1] / out_alpha.clamp(min=1e-10)
    return (
        out_color.reshape(height, width, -1),
        out_alpha.reshape(height, width, 1),
        out_depth.reshape(height, width, 1),
    )


def rasterize_torch(
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
    transmittance_threshold: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``N`` Gaussians into ``C`` cameras (see the module docstring for the algorithm).

    Args:
        means: ``[N, 3]`` centres, world units. quats: ``[N, 4]`` wxyz (normalised here).
        scales: ``[N, 3]`` standard deviations along the local axes, linear world units.
        opacities: ``[N]`` in [0, 1]. colors: ``[N, D]`` or per camera ``[C, N, D]``.
        viewmats: ``[C, 4, 4]`` world-to-camera, OpenCV. Ks: ``[C, 3, 3]`` intrinsics, pixels.
        width, height: image size in pixels. near_plane, far_plane: camera-z culling bounds.
        eps2d: screen-space dilation added to the 2D covariance, pixels².
        backgrounds: ``[C, D]`` colour behind the Gaussians, or None (black).
        transmittance_threshold: a pixel stops before the Gaussian that would bring its
            transmittance to this value or below (gsplat: 1e-4); 0 composites everything.
    Returns:
        ``colors [C, H, W, D]``, ``alphas [C, H, W, 1]`` (accumulated opacity) and
        ``depth [C, H, W, 1]`` (expected camera z: accumulated depth / alpha).
    """
    outputs = []
    for cam in range(viewmats.shape[0]):
        ids, means2d, cov2d, depths = project_gaussians(
            means, quats, scales, viewmats[cam], Ks[cam], width, height, near_plane, far_plane, eps2d
        )
        cam_colors = colors[cam] if colors.dim() == 3 else colors
        background = None if backgrounds is None else backgrounds[cam]
        outputs.append(
            _rasterize_one(
                means2d, cov2d, depths, opacities[ids], cam_colors[ids], width, height, background, transmittance_threshold
            )
        )
    return tuple(torch.stack(parts) for parts in zip(*outputs))
