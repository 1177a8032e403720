"""How much of the camera arc the tiny VGGT base's training sets show: a small CNN regressor on image pairs.

The tiny VGGT base (docs/base_models.md) collapses the cameras of views 1.. onto one pose. This probe
asks whether the images carry the cameras' rotation at all at that size and budget, with no VGGT in
the loop: a 4-layer CNN is trained from scratch to regress the rotation angle (degrees) of view ``k``
relative to view 0 of a base set (:func:`recon.pretrain_task.base_scene`, arc order: about the arc's
``k / (V - 1)``) from the image pair (view 0, view ``k``), on ``--sets`` training sets (seeds 0..), and
scored on held-out sets (seeds 1_000_000..) against predicting the training sets' mean angle (the
trivial baseline, the mean-pose baseline of the base's table for this one view).

    python -m eval.arc_probe --sets 2000 --steps 3000          # view 3 (the far end of the arc), 56 x 56
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

__all__ = ["view_pairs", "arc_probe", "main"]


def view_pairs(seeds: Sequence[int], size: int = 56, view: int = 3, views: int = 4,
               arc_range: tuple[float, float] = (20.0, 120.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pairs [N, 6, size, size], angles [N])``: views 0 and ``view`` of each seed's base set, RGB in
    [0, 1] stacked on channels, and the rotation angle (degrees) of ``view``'s camera relative to view 0's."""
    from recon.pretrain_task import base_scene
    from recon.vggt_losses import rotation_angle_deg

    if not 0 < view < views:
        raise ValueError(f"view must be in 1..{views - 1} (view 0 is the reference), got {view}")
    pairs, angles = [], []
    for seed in seeds:
        s = base_scene(seed, views, size, size, arc_range)
        pairs.append(torch.cat([s["frames"][0, 0], s["frames"][view, 0]]).float())
        ext = s["extrinsics"][:, 0].float()  # [V, 3, 4] camera-from-world
        angles.append(rotation_angle_deg(ext[view], ext[0]))
    return torch.stack(pairs), torch.stack(angles)


def _cnn(channels: int) -> nn.Module:
    """Four stride-2 3x3 convolutions (32, 64, 64, 128 channels, GELU), global average pool, one linear output."""
    widths = [channels, 32, 64, 64, 128]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(c_in, c_out, 3, 2, 1), nn.GELU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 1))


def arc_probe(train: tuple[torch.Tensor, torch.Tensor], held_out: tuple[torch.Tensor, torch.Tensor], steps: int = 3000,
              batch: int = 32, lr: float = 1e-3, seed: int = 0, eval_every: int = 500,
              log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Train :func:`_cnn` with L1 on ``train = (x [N, C, H, W], angles [N] degrees)`` (AdamW, weight decay
    0.01, batches drawn with replacement) and score ``held_out``. Returns the held-out mean absolute
    error (degrees) of the CNN and of the training mean (``baseline_mae_deg``), the last batch's
    training error and the held-out error every ``eval_every`` steps (``curve``)."""
    x, y = train
    xh, yh = held_out
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = _cnn(x.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=0.01)
    scale = 100.0  # degrees per regression unit
    baseline = (yh - y.mean()).abs().mean().item()
    curve, train_mae = [], float("nan")
    for step in range(1, steps + 1):
        i = torch.randint(0, x.shape[0], (batch,), generator=g)
        loss = (net(x[i]).squeeze(1) - y[i] / scale).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_mae = loss.item() * scale
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                mae = (net(xh).squeeze(1) * scale - yh).abs().mean().item()
            curve.append((step, round(mae, 3)))
            if log:
                log(f"step {step}: training batch {train_mae:.2f} deg, held-out {mae:.2f} deg (mean-angle baseline {baseline:.2f})")
    return {"held_out_mae_deg": curve[-1][1], "baseline_mae_deg": baseline,
            "train_batch_mae_deg": train_mae, "curve": curve}


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=int, default=2000, help="training sets (seeds 0..sets-1)")
    ap.add_argument("--held-out", type=int, default=256, help="held-out sets (seeds 1_000_000..)")
    ap.add_argument("--steps", type=int, default=3000, help="optimizer steps of 32 pairs")
    ap.add_argument("--view", type=int, default=3, help="the view paired with view 0 (3 = the far end of a 4-view arc)")
    ap.add_argument("--size", type=int, default=56, help="pixels (square), as base_data.height / width")
    args = ap.parse_args(argv)
    from fourd.data.procedural import HELD_OUT_SEED_START

    start = time.process_time()
    train = view_pairs(range(args.sets), args.size, args.view)
    held_out = view_pairs(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + args.held_out), args.size, args.view)
    out = arc_probe(train, held_out, args.steps, log=print)
    print(json.dumps({**vars(args), **out, "cpu_s": round(time.process_time() - start, 1)}))


if __name__ == "__main__":
    main()
