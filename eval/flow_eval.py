"""Held-out evaluation of the DiTs trained here (the tiny base model and its 4D fine-tunes).

* :func:`flow_loss_by_level`: rectified-flow MSE per noise level over the generated (non-reference)
  cells, next to trivial predictors: the zero velocity (loss ``1 + E[x0^2]``) and two Gaussian ones
  (the exact velocity if the latents were independent Gaussians with the training latents' mean and
  variance per channel, or per channel and position, i.e. knowing the mean frame; they know the
  statistics, not the content).
* :func:`grid_psnr`: sample 4D grids from their references, decode, and compare the generated cells
  with the ground truth (pixel PSNR) next to the copy baselines: the same-time frame of the
  fixed-view row, the same-view frame of the freeze-time column, and the VAE's own ceiling
  ``decode(encode(x))``.
* :func:`sample_sheet`: text-to-video samples of held-out captions under their ground truth.

Data: held-out procedural scenes (seeds >= 1_000_000, :mod:`fourd.data.procedural`). CLI:
``python -m eval.flow_eval {base,grid} --dit W --vae W ...`` writes a JSON of the numbers (and
PNGs); docs/base_models.md and docs/training.md give the commands.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from typing import Optional, Sequence

import torch

from eval.protocols.generation import scored_cells
from fourd.metrics import psnr
from video4d.flow import interpolate, model_timestep, reference_input, velocity_target
from video4d.grid import ReferenceCells, ReferenceLatents
from video4d.sampler import sample
from video4d.text_context import pad_contexts

__all__ = ["gaussian_velocity", "flow_loss_by_level", "grid_psnr", "sample_sheet", "main"]

LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
PSNR_CAP = 60.0  # dB: an exact copy (a scene whose objects all rest) counts as 60 dB, not infinity


def gaussian_velocity(x: torch.Tensor, sigma: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``E[eps - x0 | x_sigma]`` when every latent is independent ``N(mean_c, var_c)``.

    ``x``: ``[B, V, T, C, h, w]``; ``sigma``: ``[B]``; ``mean``, ``var``: ``[C]`` (per channel) or
    ``[C, h, w]`` (per channel and position: knows the mean frame). With
    ``a = 1 - sigma``, ``d = x - a mean``, ``s2 = a^2 var + sigma^2``: ``E[x0|x] = mean + a var d / s2``,
    ``E[eps|x] = sigma d / s2``.
    """
    s = sigma.view(-1, 1, 1, 1, 1, 1).to(x)
    m, v = ((t.view(1, 1, 1, -1, 1, 1) if t.dim() == 1 else t[None, None, None]).to(x) for t in (mean, var))
    a = 1 - s
    d = x - a * m
    s2 = a * a * v + s * s
    return s * d / s2 - (m + a * v * d / s2)


@torch.no_grad()
def flow_loss_by_level(model, x0: torch.Tensor, context: torch.Tensor, stats: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       cells: Optional[torch.Tensor] = None, mode: str = "paper", levels: Sequence[float] = LEVELS,
                       seed: int = 0, chunk: int = 16) -> list[dict[str, float]]:
    """Per noise level: mean squared velocity error of ``model`` over the non-reference cells of
    ``x0`` ``[N, V, T, C, h, w]`` (contexts ``[N, L, D]``; reference cells ``[N, V, T]`` or None) and
    of the zero predictor and one Gaussian predictor per entry of ``stats`` (name -> (mean, variance),
    see :func:`gaussian_velocity`). The noise of level ``k`` is drawn from ``seed + k``.
    Returns ``[{"sigma", "model", "zero", <stats names>}]``."""
    rows = []
    for k, level in enumerate(levels):
        g = torch.Generator().manual_seed(seed + k)
        noise = torch.randn(x0.shape, generator=g)
        sums = {"model": 0.0, "zero": 0.0, **{name: 0.0 for name in stats}}
        count = 0.0
        for i in range(0, x0.shape[0], chunk):
            x, n, ctx = x0[i:i + chunk], noise[i:i + chunk], context[i:i + chunk]
            sigma = torch.full((x.shape[0],), float(level))
            ref = ReferenceLatents(x, cells[i:i + chunk]) if cells is not None else None
            target_cells = torch.ones(x.shape[:3], dtype=torch.bool) if ref is None else ~ref.cell_mask()
            xs = reference_input(interpolate(x, n, sigma), ref, mode, n, sigma)
            target = velocity_target(x, n)
            preds = {"model": model(xs, model_timestep(sigma), ctx, ref).float(), "zero": torch.zeros_like(x),
                     **{name: gaussian_velocity(xs, sigma, *st) for name, st in stats.items()}}
            for name, pred in preds.items():
                err = (pred - target).pow(2).mean(dim=(3, 4, 5))
                sums[name] += float(err[target_cells].sum())
            count += float(target_cells.sum())
        rows.append({"sigma": float(level), **{name: total / count for name, total in sums.items()}})
    return rows


@torch.no_grad()
def grid_psnr(model, vae, frames: torch.Tensor, context: torch.Tensor, steps: int = 40, shift: float = 5.0,
              mode: Optional[str] = None, seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean PSNR (dB) over grids ``frames`` ``[N, V, F, 3, H, W]`` in [0, 1] of the generated cells
    (every view but 0, every latent time but 0) given the fixed-view row (view 0) and the freeze-time
    column (time 0): the samples and the copy-row / copy-column baselines, in pixels (decoded, with
    the VAE ceiling ``decode(encode(x))``) and in latents (peak = the grid's latent range; with the
    all-zero latents as a further baseline). Each per-grid PSNR is capped at :data:`PSNR_CAP`."""
    N, V, F = frames.shape[:3]
    target = scored_cells(V, F)  # [V, F] pixel frames of generated cells
    pixel = {"sample": [], "copy_row": [], "copy_column": [], "vae_ceiling": []}
    latent = {"sample": [], "copy_row": [], "copy_column": [], "zeros": []}
    for i in range(N):
        gt = frames[i:i + 1]
        x0 = vae.encode(gt)
        T = x0.shape[2]
        cells = ReferenceCells(0, 0).mask(V, T)
        latents = sample(model, x0.shape, context[i:i + 1], ReferenceLatents(x0, cells), steps=steps, shift=shift, seed=seed + i, reference_mode=mode)
        out = {"sample": vae.decode(latents)[0].clamp(0, 1), "vae_ceiling": vae.decode(x0)[0].clamp(0, 1),
               "copy_row": gt[0, :1].expand(V, -1, -1, -1, -1), "copy_column": gt[0, :, :1].expand(-1, F, -1, -1, -1)}
        for name, pred in out.items():
            pixel[name].append(min(float(psnr(pred[target].flatten(0, 1)[None], gt[0][target].flatten(0, 1)[None])[0]), PSNR_CAP))
        lat_target = ~cells  # [V, T]
        peak = float(x0.max() - x0.min())
        preds = {"sample": latents[0], "copy_row": x0[0, :1].expand(V, -1, -1, -1, -1), "copy_column": x0[0, :, :1].expand(-1, T, -1, -1, -1),
                 "zeros": torch.zeros_like(x0[0])}
        for name, pred in preds.items():
            mse = float((pred[lat_target] - x0[0][lat_target]).pow(2).mean())
            latent[name].append(min(10 * math.log10(peak ** 2 / max(mse, 1e-12)), PSNR_CAP))
    return {"pixel": {k: sum(v) / len(v) for k, v in pixel.items()}, "latent": {k: sum(v) / len(v) for k, v in latent.items()}}


@torch.no_grad()
def sample_sheet(model, vae, frames: torch.Tensor, context: torch.Tensor, negative: torch.Tensor, out: str,
                 steps: int = 40, shift: float = 5.0, guidance: float = 3.0, seed: int = 0) -> str:
    """PNG ``out``: for each clip ``frames[i]`` ``[1, F, 3, H, W]`` its ground truth, then a text-to-video
    sample of its caption (``context[i]``, CFG against ``negative`` ``[1, L, D]``). Returns ``out``."""
    from torchvision.utils import make_grid, save_image

    rows = []
    for i in range(frames.shape[0]):
        shape = vae.encode(frames[i:i + 1]).shape
        latents = sample(model, shape, context[i:i + 1], None, steps=steps, shift=shift, guidance=guidance, negative_context=negative, seed=seed + i)
        rows += [frames[i, 0], vae.decode(latents)[0, 0].clamp(0, 1)]
    grid = make_grid(torch.cat(rows), nrow=frames.shape[2], padding=2, pad_value=1.0)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_image(grid, out)
    return out


def _data(views: int, frames: int, size: int, count: int, split: str, encoder, text_len: int):
    from fourd.data.procedural import ProceduralSource

    source = ProceduralSource(views, size, size, split=split, static_fraction=0.0, cache=1)
    items = [source.sample(i, frames) for i in range(count)]
    contexts = pad_contexts([e.float() for e in encoder.encode([it["caption"] for it in items])], text_len)
    return torch.stack([it["frames"] for it in items]), contexts


def _check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Refuse impossible numbers before any model loads (``p.error`` names the value and the range)."""
    bad = [lv for lv in a.levels if not 0.0 < lv <= 1.0]
    if bad:
        p.error(f"--levels {bad}: a noise level sigma lies in (0, 1] (1.0 is pure noise, 0 would be the clean latent)")
    for name in ("views", "frames", "size", "count", "stats_count", "steps"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(a, name)}: must be at least 1")
    if a.psnr_count < 0:
        p.error(f"--psnr-count {a.psnr_count}: must be 0 (no PSNR) or a positive number of held-out grids")


def main(argv: Optional[list[str]] = None) -> None:
    """CLI: ``base`` (V = 1: flow loss by level, sample sheet, curve) or ``grid`` (4D: flow loss by level
    with both references, PSNR vs copy baselines); numbers to ``--json``."""
    from video4d import load_dit, load_text_encoder, load_vae
    from fourd.train.observe import plot_metrics

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["base", "grid"])
    p.add_argument("--dit", required=True, help="DiT safetensors (dit_config metadata)")
    p.add_argument("--vae", required=True, help="VAE safetensors (vae_config metadata)")
    p.add_argument("--json", required=True, help="output JSON of the numbers")
    p.add_argument("--views", type=int, default=1)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--count", type=int, default=64, help="held-out scenes for the flow loss")
    p.add_argument("--psnr-count", type=int, default=16, help="held-out grids sampled for PSNR (grid; 0: none)")
    p.add_argument("--levels", type=float, nargs="+", default=list(LEVELS), help="noise levels sigma of the flow loss (1.0: pure noise)")
    p.add_argument("--stats-count", type=int, default=64, help="training clips for the Gaussian baseline's statistics")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--shift", type=float, default=5.0)
    p.add_argument("--samples-png", default=None, help="base: sample sheet PNG")
    p.add_argument("--run-dir", default=None, help="base: training run whose metrics.jsonl becomes --curve-png")
    p.add_argument("--curve-png", default=None)
    a = p.parse_args(argv)
    _check_args(p, a)
    torch.manual_seed(0)
    model, vae = load_dit(weights=a.dit).eval(), load_vae(weights=a.vae).eval()
    encoder = load_text_encoder("tiny")
    text_len = model.config.text_len
    train_frames, _ = _data(a.views, a.frames, a.size, a.stats_count, "train", encoder, text_len)
    with torch.no_grad():
        train_lat = torch.cat([vae.encode(train_frames[i:i + 8]) for i in range(0, len(train_frames), 8)])
    stats = {"gaussian_channel": (train_lat.mean(dim=(0, 1, 2, 4, 5)), train_lat.var(dim=(0, 1, 2, 4, 5))),
             "gaussian_position": (train_lat.mean(dim=(0, 1, 2)), train_lat.var(dim=(0, 1, 2)))}
    frames, contexts = _data(a.views, a.frames, a.size, a.count, "held_out", encoder, text_len)
    with torch.no_grad():
        x0 = torch.cat([vae.encode(frames[i:i + 8]) for i in range(0, len(frames), 8)])
    cells = None if a.views == 1 else ReferenceCells(0, 0).mask(a.views, x0.shape[2]).expand(x0.shape[0], -1, -1)
    result = {"dit": a.dit, "held_out_scenes": a.count, "grid": list(x0.shape[1:]),
              "flow_loss": flow_loss_by_level(model, x0, contexts, stats, cells, model.config.reference_mode, a.levels)}
    if a.what == "grid" and a.psnr_count > 0:
        n = a.psnr_count
        result["psnr"] = grid_psnr(model, vae, frames[:n], contexts[:n], a.steps, a.shift)
    if a.samples_png:
        negative = pad_contexts([encoder.encode([""])[0].float()], text_len)
        sample_sheet(model, vae, frames[:4], contexts[:4], negative, a.samples_png, a.steps, a.shift)
    if a.run_dir and a.curve_png:
        plot_metrics(a.run_dir, a.curve_png, smooth=50, log_y=True, title=os.path.basename(a.dit))
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
