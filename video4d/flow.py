"""Rectified flow in the Wan2.1 fine-tuning convention, with reference (conditioning) cells.

Noise level ``sigma`` in ``[0, 1]`` (0 = data, 1 = pure noise), per sample ``[B]``:

* interpolation ``x_sigma = (1 - sigma) * x0 + sigma * eps``;
* the model predicts the velocity ``d x_sigma / d sigma = eps - x0``;
* the model's timestep input is ``sigma * 1000``;
* timestep shift ``sigma' = shift * sigma / (1 + (shift - 1) * sigma)`` (``shift > 1`` spends more
  time at high noise; ``shift = 1`` is the identity; 0 and 1 are fixed points).

Reference cells (the cells ``(v, t)`` given as conditioning) enter the model input in one of two
modes (:data:`REFERENCE_MODES`, ``DiTConfig.reference_mode``); the DiT adds the patch embedding of the
clean reference latents at those cells in both (:class:`video4d.model.wan.WanDiT4D`):

* ``"paper"`` (default; paper §3.1: "adding the patch embeddings of the reference frames to the
  noised latent tokens"): every cell, reference cells included, holds the noised latents
  ``x_sigma = (1 - sigma) x0 + sigma eps``; the reference enters only through its added patch
  embedding. The sampler keeps each reference cell on its forward-process path
  ``(1 - sigma_i) x0 + sigma_i eps_ref`` (``eps_ref`` = that cell's starting noise), which is the
  training input distribution there, and ends at exactly ``x0``.
* ``"replace"`` (the earlier behaviour of this codebase): reference cells hold the clean ``x0`` at
  every noise level (the model sees them directly and again through the added embedding).

In both modes reference cells are excluded from the loss: their output is never used (the sampler
overwrites them), so the model's capacity goes to the generated cells.

Which references a training sample gets is drawn per sample (:class:`ReferenceChoice`).
Loss weighting (:func:`loss_weight`) and the default timestep distribution follow DiffSynth-Studio's
Wan2.1 training recipe (see :class:`TimestepSampling`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import math

import torch

from video4d.grid import ReferenceCells, ReferenceLatents
from video4d.model.config import REFERENCE_MODES
WEIGHTINGS = ("none", "bell")

__all__ = [
    "REFERENCE_MODES",
    "TimestepSampling",
    "ReferenceChoice",
    "loss_weight",
    "reference_input",
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
    """How training noise levels are drawn and weighted.

    ``mode``: ``"uniform"`` (sigma ~ U(0, 1)) or ``"logit_normal"`` (sigma = sigmoid(N(mean, std));
    its median is ``sigmoid(mean)``). ``shift``: timestep shift applied afterwards (1.0 = none).
    ``weighting``: per-sample loss weight of the noise level, ``"none"`` or ``"bell"``
    (:func:`loss_weight`).

    Defaults = the Wan2.1 fine-tuning recipe of DiffSynth-Studio (``FlowMatchScheduler(shift=5,
    sigma_min=0.0, extra_one_step=True)`` with ``set_timesteps(1000, training=True)``: a timestep drawn
    uniformly from the 1000 shifted levels, loss weighted by its bell-shaped ``training_weight``); here
    the level is drawn from the continuous uniform distribution before the shift.
    """

    mode: str = "uniform"
    mean: float = 0.0
    std: float = 1.0
    shift: float = 5.0
    weighting: str = "bell"

    def __post_init__(self) -> None:
        if self.mode not in ("uniform", "logit_normal"):
            raise ValueError(f"unknown timestep sampling mode {self.mode!r}; use 'uniform' or 'logit_normal'")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {self.weighting!r}; use one of {', '.join(WEIGHTINGS)}")
        if self.shift <= 0:
            raise ValueError(f"timestep shift must be positive, got {self.shift}")


def loss_weight(sigma: torch.Tensor, sampling: TimestepSampling) -> torch.Tensor:
    """Loss weight of noise levels ``sigma`` (any shape, in [0, 1]), float32, same shape.

    ``"none"``: 1. ``"bell"``: DiffSynth-Studio's Wan training weight
    ``exp(-2 (sigma - 1/2)^2) - exp(-1/2)`` (a bell over the timestep ``1000 sigma`` centred at 500,
    zero at both ends), divided by its mean over the 1000 shifted training levels
    ``shift(linspace(1, 0, 1001)[:-1])`` so that the weights average 1 over the schedule.
    """
    if sampling.weighting == "none":
        return torch.ones_like(sigma, dtype=torch.float32)

    def bell(s: torch.Tensor) -> torch.Tensor:
        return torch.exp(-2.0 * (s - 0.5) ** 2) - math.exp(-0.5)

    levels = shift_sigma(torch.linspace(1.0, 0.0, 1001, dtype=torch.float64)[:-1], sampling.shift)
    return (bell(sigma.double()) / bell(levels).mean()).float()


def sample_training_sigma(batch: int, sampling: TimestepSampling = TimestepSampling(), generator: Optional[torch.Generator] = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Draw ``batch`` noise levels, float32 ``[B]`` in ``(0, 1)``, on ``device``.

    Random numbers come from ``generator`` (on its own device) and are then moved to ``device``.
    """
    gen_device = generator.device if generator is not None else "cpu"
    if sampling.mode == "uniform":
        sigma = torch.rand(batch, generator=generator, device=gen_device)
    else:
        if sampling.std <= 0:
            raise ValueError(f"logit_normal std must be positive, got {sampling.std}")
        sigma = torch.sigmoid(sampling.mean + sampling.std * torch.randn(batch, generator=generator, device=gen_device))
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
    A sample's :class:`ReferenceCells` (an explicit mask is kept as given) that would cover the whole
    grid, and so leave no cell to learn from (a freeze-time column when ``T = 1``, a fixed-view row
    when ``V = 1``), loses that part (:func:`_leave_a_target`): in the freeze-time stage of the
    progressive schedule (``V x 1`` grids) "both" trains as "row" and "column" as "none".
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
        mask = torch.stack([_leave_a_target(c, V, T).mask(V, T, device=x0.device) for c in cells])
    if static is not None and static_drop == "all":
        mask[static.to(device=x0.device, dtype=torch.bool)] = False
    if not bool(mask.any()):
        return None
    return ReferenceLatents(latents=x0, cells=mask)


def _leave_a_target(cells: ReferenceCells, V: int, T: int) -> ReferenceCells:
    """``cells`` without the part that covers every cell of a ``V x T`` grid: the freeze-time column
    when ``T = 1``, the fixed-view row when ``V = 1`` (a sample with no target cell adds nothing to
    the loss; a batch of them is a step with zero gradient that AdamW still moves)."""
    if T == 1 and cells.time is not None:
        cells = ReferenceCells(view=cells.view, time=None)
    if V == 1 and cells.view is not None:
        cells = ReferenceCells(view=None, time=cells.time)
    return cells


def _drop_for_static(cells: ReferenceCells, is_static: bool, static_drop: str) -> ReferenceCells:
    if not is_static or static_drop == "all":
        return cells
    if static_drop == "view":
        return ReferenceCells(view=None, time=cells.time)
    return ReferenceCells(view=cells.view, time=None)


@dataclass(frozen=True)
class ReferenceChoice:
    """Which references a training sample gets, drawn per sample.

    Probabilities of the four cases (they must sum to 1): ``both`` (fixed-view row ``view`` and
    freeze-time column ``time``), ``row`` only, ``column`` only, ``none`` (text only). Single
    references train the single-reference mode the paper samples with CFG (App. B) and the monocular
    mode (a first column made from one frame); ``none`` trains plain text-to-4D, which CFG's
    unconditional branch also relies on. The paper does not state these rates; the defaults of
    ``configs/train_video4d.yaml`` are ours.
    """

    both: float = 1.0
    row: float = 0.0
    column: float = 0.0
    none: float = 0.0
    view: int = 0
    time: int = 0

    def __post_init__(self) -> None:
        probs = self.probabilities()
        if bool((probs < 0).any()) or abs(float(probs.sum()) - 1.0) > 1e-6:
            raise ValueError(f"reference probabilities both/row/column/none must be >= 0 and sum to 1, got {probs.tolist()}")

    def probabilities(self) -> torch.Tensor:
        """float64 ``[4]``: both, row, column, none."""
        return torch.tensor([self.both, self.row, self.column, self.none], dtype=torch.float64)

    def draw(self, batch: int, generator: Optional[torch.Generator] = None) -> list[ReferenceCells]:
        """``batch`` independent draws (one uniform number per sample from ``generator``)."""
        u = torch.rand(batch, generator=generator, device=generator.device if generator is not None else "cpu").cpu().double()
        case = torch.bucketize(u, self.probabilities().cumsum(0)[:-1], right=True).tolist()
        table = ((self.view, self.time), (self.view, None), (None, self.time), (None, None))
        return [ReferenceCells(view=table[c][0], time=table[c][1]) for c in case]


def apply_reference(x: torch.Tensor, reference: Optional[ReferenceLatents], noise: Optional[torch.Tensor] = None, sigma: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Set the reference cells of ``x`` ``[B, V, T, C, h, w]`` from the reference latents.

    Without ``noise``: an exact copy of the clean latents. With ``noise`` (like ``x``) and ``sigma``
    (``[B]``): the forward-process value ``(1 - sigma) latents + sigma noise`` there.
    Returns a new tensor (``x`` itself when ``reference`` is None).
    """
    if reference is None:
        return x
    B, V, T = x.shape[:3]
    mask = reference_cell_mask(reference, B, V, T, x.device)
    if tuple(reference.latents.shape) != tuple(x.shape):
        raise ValueError(f"reference latents {list(reference.latents.shape)} do not match the grid {list(x.shape)}")
    value = reference.latents.to(device=x.device, dtype=x.dtype)
    if noise is not None:
        value = interpolate(value, noise.to(device=x.device, dtype=x.dtype), sigma.to(x.device))
    return torch.where(mask[..., None, None, None], value, x)


def reference_input(x: torch.Tensor, reference: Optional[ReferenceLatents], mode: str, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The model input at noise level ``sigma`` (``[B]``) given the current latents ``x``
    ``[B, V, T, C, h, w]``: reference cells hold ``(1 - sigma) x0 + sigma noise`` (``mode="paper"``;
    ``noise`` like ``x``, the reference cells' noise) or the clean ``x0`` (``"replace"``); other cells
    keep ``x``. See the module docstring."""
    if mode not in REFERENCE_MODES:
        raise ValueError(f"unknown reference mode {mode!r}; use one of {', '.join(REFERENCE_MODES)}")
    if mode == "replace":
        return apply_reference(x, reference)
    return apply_reference(x, reference, noise, sigma)


def flow_matching_loss(
    model: VelocityModel,
    x0: torch.Tensor,
    context: torch.Tensor,
    reference: Optional[ReferenceLatents] = None,
    generator: Optional[torch.Generator] = None,
    sampling: TimestepSampling = TimestepSampling(),
    noise: Optional[torch.Tensor] = None,
    sigma: Optional[torch.Tensor] = None,
    reference_mode: str = "paper",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rectified-flow MSE over the non-reference cells of a batch, weighted per sample by
    :func:`loss_weight` of its noise level.

    ``model(latents [B, V, T, C, h, w], timestep [B] = sigma * 1000, context [B, L, D], reference)``
    returns a velocity ``[B, V, T, C, h, w]``. ``x0``: clean latents ``[B, V, T, C, h, w]``.
    ``reference``: conditioning cells (see :func:`build_reference`), fed as ``reference_mode`` says
    (:func:`reference_input`) and excluded from the loss. ``noise`` (like ``x0``) and ``sigma``
    (``[B]``) are drawn from ``generator`` unless given.
    Returns ``(loss, stats)``: the scalar fp32 loss (weighted mean squared error per element over
    the target cells of the whole batch: sum of ``w_b * err`` over target cells / number of target
    cells) and detached 0-dim tensors ``{"loss", "sigma_mean", "target_fraction"}`` (fraction of
    cells that are targets).
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
    noisy = reference_input(interpolate(x0, noise, sigma), reference, reference_mode, noise, sigma)
    pred = model(noisy, model_timestep(sigma.to(x0.device, torch.float32)), context, reference)
    if pred.shape != x0.shape:
        raise ValueError(f"model returned {list(pred.shape)}, expected {list(x0.shape)}")
    target_cells = (~ref_mask).to(torch.float32)
    err = (pred.float() - velocity_target(x0, noise).float()).pow(2).mean(dim=(3, 4, 5))
    weight = loss_weight(sigma.to(x0.device), sampling).reshape(B, 1, 1)
    loss = (err * weight * target_cells).sum() / target_cells.sum().clamp(min=1.0)
    stats = {
        "loss": loss.detach(),
        "sigma_mean": sigma.detach().float().mean(),
        "target_fraction": target_cells.mean(),
    }
    return loss, stats
