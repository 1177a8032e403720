"""Speed/memory benchmark of the reconstructor; prints a table (no assertions).

Usage: ``python -m recon.model.benchmark --preset tiny-4d --grids 2x2 4x4 --size 28x28``
(``--dtype bf16`` for autocast, ``--backward`` to time forward+backward, ``--checkpointing``).
Times are the median of ``--repeats`` runs after one warm-up; memory is the CUDA peak (CPU: n/a).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from .loading import build_reconstructor


def _measure(model, images: torch.Tensor, backward: bool, dtype: torch.dtype, repeats: int) -> tuple[float, float]:
    device = images.device
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32), torch.set_grad_enabled(backward):
            out = model(images)
            if backward:
                (out.depth.float().mean() + out.gaussians.means.float().square().mean()).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def main(argv=None) -> None:
    """Parse arguments, run each grid ``VxT`` and print one table row per grid."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny-4d")
    p.add_argument("--grids", nargs="+", default=["2x2"], help="V x T grids, e.g. 4x4")
    p.add_argument("--size", default="28x28", help="H x W in pixels (multiples of 14)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--backward", action="store_true")
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    H, W = (int(s) for s in args.size.split("x"))
    model = build_reconstructor({"preset": args.preset, "gradient_checkpointing": args.checkpointing}).to(device)
    model.train(args.backward)
    print(f"{args.preset} on {device} ({args.dtype}, {'fwd+bwd' if args.backward else 'fwd'}), {H}x{W} px")
    print(f"{'V x T':>8} {'frames':>7} {'seconds':>9} {'peak GiB':>9}")
    for grid in args.grids:
        V, T = (int(s) for s in grid.split("x"))
        images = torch.rand(1, V, T, 3, H, W, device=device)
        seconds, peak = _measure(model, images, args.backward, dtype, args.repeats)
        print(f"{grid:>8} {V * T:>7} {seconds:>9.3f} {peak:>9.2f}")


if __name__ == "__main__":
    main()
