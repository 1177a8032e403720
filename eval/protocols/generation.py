"""4D generation on held-out grid cells, from a fixed-view row and a freeze-time column (paper §4.1).

The ground-truth grid ``[V, F, 3, H, W]`` is encoded per view by the VAE; the latent cells of view
``ref_view`` (all times) and of latent time ``ref_time`` (all views) are given to the sampler as
clean references (:class:`video4d.grid.ReferenceLatents`), the rest is sampled from noise
(:func:`video4d.sampler.sample`, Euler, no CFG as in the paper's App. B) and decoded.

Scored cells are the pixel frames that no reference latent encodes: views ``!= ref_view`` and
frames ``f`` with latent time ``!= ref_time`` (the causal VAE: latent 0 <-> frame 0, latent
``k >= 1`` <-> frames ``4k-3 .. 4k``). Besides the copy baselines (:mod:`eval.protocols.baselines`)
the table gets a "VAE round trip" row (decode(encode(gt))): the best the latent model could score.

**Monocular mode** (:func:`generate_monocular`): only the fixed-view video (view 0) is given; the
freeze-time column is generated first by :func:`video4d.pipeline.generate` (mode ``"monocular"``),
then the grid. It is scored on the same held-out cells, so the two rows compare directly.
"""
from __future__ import annotations

from typing import Optional

import torch

from video4d.grid import ReferenceCells, ReferenceLatents
from video4d.sampler import sample

__all__ = ["latent_time_of_frames", "scored_cells", "generate_grid", "generate_monocular", "vae_round_trip"]


def latent_time_of_frames(num_frames: int, factor: int = 4) -> torch.Tensor:
    """Latent time index of each pixel frame of a causal-VAE clip of ``F = factor * k + 1`` frames
    (``factor``: the VAE's temporal compression, 4 for Wan2.1): long ``[F]``."""
    if num_frames < 1 or (num_frames - 1) % factor:
        raise ValueError(f"clips must have {factor}k + 1 frames for the causal VAE, got {num_frames}")
    f = torch.arange(num_frames)
    return (f + factor - 1) // factor


def scored_cells(num_views: int, num_frames: int, ref_view: Optional[int] = 0, ref_time: Optional[int] = 0) -> torch.Tensor:
    """Boolean ``[V, F]``: pixel frames not encoded by any reference latent (the evaluated cells)."""
    latent_t = latent_time_of_frames(num_frames)
    mask = torch.ones(num_views, num_frames, dtype=torch.bool)
    if ref_view is not None:
        mask[ref_view] = False
    if ref_time is not None:
        mask[:, latent_t == ref_time] = False
    return mask


@torch.no_grad()
def vae_round_trip(vae: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """decode(encode(frames)) for a grid ``[V, F, 3, H, W]`` -> ``[V, F, 3, H, W]`` clamped to [0, 1]."""
    device = next(vae.parameters()).device
    return vae.decode(vae.encode(frames[None].to(device).float()))[0].clamp(0, 1).cpu()


@torch.no_grad()
def generate_grid(dit: torch.nn.Module, vae: torch.nn.Module, frames: torch.Tensor, context: torch.Tensor,
                  steps: int = 4, shift: float = 5.0, seed: int = 0,
                  ref_view: Optional[int] = 0, ref_time: Optional[int] = 0) -> torch.Tensor:
    """Sample the grid of ``frames [V, F, 3, H, W]`` (in [0, 1]) from its reference row/column.

    ``context``: text embeddings ``[1, L, text_dim]`` on the sampling device. Returns the decoded
    grid ``[V, F, 3, H, W]`` in [0, 1] on the CPU (reference cells decoded from their latents).
    """
    device = context.device
    x0 = vae.encode(frames[None].to(device).float())  # [1, V, T, C, h, w]
    cells = ReferenceCells(view=ref_view, time=ref_time).mask(x0.shape[1], x0.shape[2], device=device)
    reference = ReferenceLatents(latents=x0, cells=cells)
    latents = sample(dit, tuple(x0.shape), context, reference=reference, steps=steps, shift=shift, guidance=1.0, seed=seed)
    return vae.decode(latents)[0].clamp(0, 1).cpu()


@torch.no_grad()
def generate_monocular(dit: torch.nn.Module, vae: torch.nn.Module, video: torch.Tensor, views: int, context: torch.Tensor,
                       steps: int = 4, shift: float = 5.0, seed: int = 0, guidance_single: float = 1.0,
                       negative_context: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sample a ``views``-view grid from the fixed-view ``video [F, 3, H, W]`` (in [0, 1]) alone with
    :func:`video4d.pipeline.generate` in ``"monocular"`` mode (column pass with CFG scale
    ``guidance_single``, needing ``negative_context`` when != 1; grid pass without CFG). ``context``
    ``[1, L, text_dim]`` on the sampling device. Returns the decoded grid ``[V, F, 3, H, W]`` in [0, 1] (CPU)."""
    from video4d.pipeline import GenerationSettings, generate

    settings = GenerationSettings(mode="monocular", views=views, steps=steps, shift=shift, guidance=1.0,
                                  guidance_single=guidance_single, seed=seed)
    out = generate(dit, vae, video[None], context, settings, negative_context=negative_context)
    return out["frames"][0].clamp(0, 1)
