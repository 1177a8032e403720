"""Deterministic Euler sampler for the rectified-flow 4D DiT, with reference cells and CFG.

Integrates ``dx/dsigma = v(x, sigma)`` from ``sigma = 1`` (noise) to ``sigma = 0`` (data) on the
shifted schedule of :func:`sampling_sigmas` (the convention of :mod:`video4d.flow`). Reference cells
are fed as in training (:func:`video4d.flow.reference_input`; the mode is the model's
``config.reference_mode`` unless given): ``"paper"`` keeps them on the forward-process path
``(1 - sigma_i) x0 + sigma_i eps`` (``eps`` = their starting noise), ``"replace"`` holds the clean
latents at every step. The output equals the reference latents there in both modes.
Default 40 steps (the paper's App. B, Tab. S2) with Wan2.1's T2V shift 5.

Classifier-free guidance: ``v = v_u + g * (v_c - v_u)`` where ``v_c`` uses ``context`` and ``v_u``
the negative context (zeros, the "empty" context, when none is given). Guidance acts on the text
only: both branches see the same reference cells. The paper uses ``g = 1`` (no CFG, one model call
per step) with both references and needs CFG with a single reference.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from video4d.flow import REFERENCE_MODES, apply_reference, model_timestep, reference_input, shift_sigma
from video4d.grid import ReferenceLatents

__all__ = ["sampling_sigmas", "sample"]


def sampling_sigmas(steps: int, shift: float = 5.0) -> torch.Tensor:
    """Noise levels of an Euler run: float64 ``[steps + 1]``, shifted, from exactly 1 down to exactly 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_sigma(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


def _batch_context(ctx: torch.Tensor, B: int, what: str) -> torch.Tensor:
    if ctx.dim() != 3:
        raise ValueError(f"{what} must be [B, L, text_dim], got {list(ctx.shape)}")
    if ctx.shape[0] == B:
        return ctx
    if ctx.shape[0] == 1:
        return ctx.expand(B, -1, -1)
    raise ValueError(f"{what} has batch {ctx.shape[0]}, latents have batch {B}")


@torch.no_grad()
def sample(
    model: Callable[..., torch.Tensor],
    shape_or_noise: Sequence[int] | torch.Tensor,
    context: torch.Tensor,
    reference: Optional[ReferenceLatents] = None,
    steps: int = 40,
    shift: float = 5.0,
    guidance: float = 1.0,
    negative_context: Optional[torch.Tensor] = None,
    seed: int = 0,
    progress: bool = False,
    reference_mode: Optional[str] = None,
) -> torch.Tensor:
    """Generate a 4D latent grid.

    ``model(latents [B, V, T, C, h, w], timestep [B] = sigma * 1000, context [B, L, D], reference)``
    returns the velocity ``[B, V, T, C, h, w]``.
    ``shape_or_noise``: the grid shape ``(B, V, T, C, h, w)`` (the starting noise is then drawn in
    float32 on the CPU from ``seed``, so results do not depend on the device's RNG) or the starting
    noise itself ``[B, V, T, C, h, w]``. ``context``: ``[B or 1, L, D]`` text embeddings; its device
    is the sampling device. ``negative_context``: ``[B or 1, L', D]`` for CFG (zeros of the shape of
    ``context`` when None). ``steps``: Euler steps (model calls per step: 1, or 2 when
    ``guidance != 1``); ``shift``: timestep shift of :func:`sampling_sigmas`. ``reference_mode``:
    ``"paper"`` | ``"replace"`` (None: ``model.config.reference_mode``, else ``"paper"``).
    Returns float32 latents ``[B, V, T, C, h, w]`` (reference cells equal ``reference.latents``).
    """
    device = context.device
    if isinstance(shape_or_noise, torch.Tensor):
        x = shape_or_noise.to(device=device, dtype=torch.float32)
    else:
        shape = tuple(int(s) for s in shape_or_noise)
        if len(shape) != 6:
            raise ValueError(f"grid shape must be (B, V, T, C, h, w), got {shape}")
        generator = torch.Generator("cpu").manual_seed(seed)
        x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
    B = x.shape[0]
    context = _batch_context(context, B, "context")
    use_cfg = guidance != 1.0
    if use_cfg:
        negative = torch.zeros_like(context) if negative_context is None else _batch_context(negative_context.to(device), B, "negative_context")
    if reference_mode is None:
        reference_mode = getattr(getattr(model, "config", None), "reference_mode", "paper")
    if reference_mode not in REFERENCE_MODES:
        raise ValueError(f"unknown reference_mode {reference_mode!r}; use one of {', '.join(REFERENCE_MODES)}")
    start_noise = x
    sigmas = sampling_sigmas(steps, shift)
    for i in tqdm(range(steps), disable=not progress, desc="sampling"):
        sigma = torch.full((B,), float(sigmas[i]), device=device)
        x = reference_input(x, reference, reference_mode, start_noise, sigma)
        timestep = model_timestep(sigma)
        velocity = model(x, timestep, context, reference).float()
        if use_cfg:
            uncond = model(x, timestep, negative, reference).float()
            velocity = uncond + guidance * (velocity - uncond)
        x = x + float(sigmas[i + 1] - sigmas[i]) * velocity
    return apply_reference(x, reference)
