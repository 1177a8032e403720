"""Rectified flow in the Wan2.1 fine-tuning convention, with reference (conditioning) cells.

Noise level ``sigma`` in ``[0, 1]`` (0 = data, 1 = pure noise), per sample ``[B]``:

* interpolation ``x_sigma = (1 - sigma) * x0 + sigma * eps``;
* the model predicts the velocity ``d x_sigma / d sigma = eps - x0``;
* the model's timestep input is ``sigma * 1000``;
* timestep shift ``sigma' = shift * sigma / (1 + (shift - 1) * sigma)`` (``shift > 1`` spends more
  time at high noise; ``shift = 1`` is the identity; 0 and 1 are fixed points).

Reference cells: the cells ``(v, t)`` given as conditioning hold the **clean** latents ``x0`` in the
noisy model input at every noise level (the model sees them directly and again through the DiT's
added reference patch embedding), are excluded from the loss, and are held fixed by the sampler
(:func:`video4d.sampler.sample`), so training and sampling agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from video4d.grid import ReferenceCells, ReferenceLatents

__all__ = [
    "TimestepSampling",
    "interpolate",
    "velocity_target",
    "model_timestep",
    "shift_sigma",
    "sample_training_sigma",
    "reference_cell_mask",
    "build_reference",
    "apply_reference",
    "flow_matching_loss",
]

VelocityModel = Callable[..., torch.Tensor]


def _per_sample(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[B]`` -> ``[B, 1, ..., 1]`` broadcastable against ``x``, in ``x``'s dtype and device."""
    return sigma.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def interpolate(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Noisy latents ``(1 - sigma) x0 + sigma noise``.

    ``x0``, ``noise``: ``[B, ...]`` (e.g. ``[B, V, T, C, h, w]``); ``sigma``: ``[B]`` in ``[0, 1]``.
    Returns ``[B, ...]``.
    """
    s = _per_sample(sigma, x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Regression target ``noise - x0`` (the derivative of :func:`interpolate` in ``sigma``), ``[B, ...]``."""
    return noise - x0


def model_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """Timestep fed to the DiT: ``sigma * 1000``, float ``[B]`` (Wan2.1's 0..1000 scale)."""
    return sigma * 1000.0


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """Timestep shift ``shift * sigma / (1 + (shift - 1) * sigma)``; any shape, values in ``[0, 1]``."""
    if shift <= 0:
        raise ValueError(f"timestep shift must be positive, got {shift}")
    return shift * sigma / (1 + (shift - 1) * sigma)


@dataclass(frozen=True)
class TimestepSampling:
    """How training noise levels are drawn.

    ``mode``: ``"uniform"`` (sigma ~ U(0, 1)) or ``"logit_normal"`` (sigma = sigmoid(N(mean, std));
    its median is ``sigmoid(mean)``). ``shift``: timestep shift applied afterwards (1.0 = none).
    """

    mode: str = "uniform"
    mean: float = 0.0
    std: float = 1.0
    shift: float = 1.0


def sample_training_sigma(batch: int, sampling: TimestepSampling = TimestepSampling(), generator: Optional[torch.Generator] = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Draw ``batch`` noise levels, float32 ``[B]`` in ``(0, 1)``, on ``device``.

    Random numbers come from ``generator`` (on its own device) and are then moved to ``device``.
    """
    gen_device = generator.device if generator is not None else "cpu"
    if sampling.mode == "uniform":
        sigma = torch.rand(batch, generator=generator, device=gen_device)
    elif sampling.mode == "logit_normal":
        if sampling.std <= 0:
            raise ValueError(f"logit_normal std must be positive, got {sampling.std}")
        sigma = torch.sigmoid(sampling.mean + sampling.std * torch.randn(batch, generator=generator, device=gen_device))
    else:
        raise ValueError(f"unknown timestep sampling mode {sampling.mode!r}; use 'uniform' or 'logit_normal'")
    return shift_sigma(sigma, sampling.shift).to(device)


def reference_cell_mask(reference: Optional[ReferenceLatents], B: int, V: int, T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``[B, V, T]``: True at reference cells (all False when ``reference`` is None)."""
    if reference is None:
        return torch.zeros(B, V, T, dtype=torch.bool, device=device)
    mask = reference.cell_mask().to(device)
    if tuple(mask.shape) != (B, V, T):
        raise ValueError(f"reference cells {list(mask.shape)} do not match the grid [B={B}, V={V}, T={T}]")
    return mask


def build_reference(
    x0: torch.Tensor,
    cells: ReferenceCells | Sequence[ReferenceCells] | torch.Tensor,
    static: Optional[torch.Tensor] = None,
    static_drop: str = "all",
) -> Optional[ReferenceLatents]:
    """Reference latents for a training batch: the clean ``x0`` at the chosen cells.

    ``x0``: ``[B, V, T, C, h, w]``. ``cells``: one :class:`ReferenceCells` for the whole batch, one
    per sample, or a boolean mask ``[V, T]`` / ``[B, V, T]``.
    ``static``: optional boolean ``[B]`` marking static scenes (frames duplicated over time). The
    paper (App. B) removes frame conditioning on such samples so that the model cannot learn to
    copy frames instead of inferring viewpoints; ``static_drop`` says what is removed there:
    ``"all"`` (no reference), ``"view"`` (the fixed-view row) or ``"time"`` (the freeze-time column).
    Returns a :class:`ReferenceLatents` with per-sample cells ``[B, V, T]``, or None when no sample
    has a reference cell.
    """
    if static_drop not in ("all", "view", "time"):
        raise ValueError(f"unknown static_drop {static_drop!r}; use 'all', 'view' or 'time'")
    B, V, T = x0.shape[:3]
    if isinstance(cells, ReferenceCells):
        cells = [cells] * B
    if isinstance(cells, torch.Tensor):
        mask = cells.to(device=x0.device, dtype=torch.bool).expand(B, V, T).clone()
        if static is not None and static_drop != "all":
            raise ValueError("static_drop 'view'/'time' needs ReferenceCells, not a mask")
    else:
        if len(cells) != B:
            raise ValueError(f"got {len(cells)} ReferenceCells for a batch of {B}")
        if static is not None:
            cells = [_drop_for_static(c, bool(s), static_drop) for c, s in zip(cells, static.tolist())]
        mask = torch.stack([c.mask(V, T, device=x0.device) for c in cells])
    if static is not None and static_drop == "all":
        mask[static.to(device=x0.device, dtype=torch.bool)] = False
    if not bool(mask.any()):
        return None
    return ReferenceLatents(latents=x0, cells=mask)


def _drop_for_static(cells: ReferenceCells, is_static: bool, static_drop: str) -> ReferenceCells:
    if not is_static or static_drop == "all":
        return cells
    if static_drop == "view":
        return ReferenceCells(view=None, time=cells.time)
    return ReferenceCells(view=cells.view, time=None)


def apply_reference(x: torch.Tensor, reference: Optional[ReferenceLatents]) -> torch.Tensor:
    """Replace the reference cells of ``x`` ``[B, V, T, C, h, w]`` by the reference latents (exact copy).

    Returns a new tensor (``x`` itself when ``reference`` is None).
    """
    if reference is None:
        return x
    B, V, T = x.shape[:3]
    mask = reference_cell_mask(reference, B, V, T, x.device)
    if tuple(reference.latents.shape) != tuple(x.shape):
        raise ValueError(f"reference latents {list(reference.latents.shape)} do not match the grid {list(x.shape)}")
    return torch.where(mask[..., None, None, None], reference.latents.to(device=x.device, dtype=x.dtype), x)


def flow_matching_loss(
    model: VelocityModel,
    x0: torch.Tensor,
    context: torch.Tensor,
    reference: Optional[ReferenceLatents] = None,
    generator: Optional[torch.Generator] = None,
    sampling: TimestepSampling = TimestepSampling(),
    noise: Optional[torch.Tensor] = None,
    sigma: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rectified-flow MSE over the non-reference cells of a batch.

    ``model(latents [B, V, T, C, h, w], timestep [B] = sigma * 1000, context [B, L, D], reference)``
    returns a velocity ``[B, V, T, C, h, w]``. ``x0``: clean latents ``[B, V, T, C, h, w]``.
    ``reference``: clean conditioning cells (see :func:`build_reference`); they hold ``x0`` in the
    noisy input and are excluded from the loss. ``noise`` (like ``x0``) and ``sigma`` (``[B]``) are
    drawn from ``generator`` unless given.
    Returns ``(loss, stats)``: the scalar fp32 loss (mean squared error per element over the target
    cells of the whole batch) and detached 0-dim tensors ``{"loss", "sigma_mean",
    "target_fraction"}`` (fraction of cells that are targets).
    """
    if x0.dim() != 6:
        raise ValueError(f"x0 must be [B, V, T, C, h, w], got {list(x0.shape)}")
    B, V, T = x0.shape[:3]
    gen_device = generator.device if generator is not None else "cpu"
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=torch.float32).to(device=x0.device, dtype=x0.dtype)
    if sigma is None:
        sigma = sample_training_sigma(B, sampling, generator, device=x0.device)
    ref_mask = reference_cell_mask(reference, B, V, T, x0.device)
    noisy = apply_reference(interpolate(x0, noise, sigma), reference)
    pred = model(noisy, model_timestep(sigma.to(x0.device, torch.float32)), context, reference)
    if pred.shape != x0.shape:
        raise ValueError(f"model returned {list(pred.shape)}, expected {list(x0.shape)}")
    target_cells = (~ref_mask).to(torch.float32)
    err = (pred.float() - velocity_target(x0, noise).float()).pow(2).mean(dim=(3, 4, 5))
    loss = (err * target_cells).sum() / target_cells.sum().clamp(min=1.0)
    stats = {
        "loss": loss.detach(),
        "sigma_mean": sigma.detach().float().mean(),
        "target_fraction": target_cells.mean(),
    }
    return loss, stats
