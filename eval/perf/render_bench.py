"""Speed of the torch rasterizer: ``python -m eval.perf.render_bench [--threads 1] [--device cpu]``.

Prints a table of forward and forward+backward times (median of ``--repeats`` runs) for random
scenes of pixel-sized Gaussians (the regime of pixel-aligned reconstructors: about one Gaussian
per pixel footprint) at several Gaussian counts and resolutions, one camera.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from recon.render import render_gaussians

__all__ = ["run_benchmark", "main"]


def _scene(n: int, size: int, device: str):
    g = torch.Generator().manual_seed(0)
    f = float(size)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.4, 0.4, 0.3]) + torch.tensor([0.0, 0.0, 2.5])
    pixel_world = 2.5 / f
    scales = (torch.rand(n, 3, generator=g) * 1.5 + 0.5) * pixel_world
    tensors = dict(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        scales=scales,
        opacities=torch.rand(n, generator=g) * 0.9 + 0.05,
        colors=torch.rand(n, 3, generator=g),
    )
    params = {k: v.to(device).requires_grad_(True) for k, v in tensors.items()}
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]], device=device)[None]
    return params, torch.eye(4, device=device)[None], K


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and process CPU seconds of ``fn()`` (CPU time is robust to a busy machine)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def run_benchmark(counts=(5000, 20000, 100000), sizes=(64, 128, 256), repeats: int = 3, device: str = "cpu") -> list[dict]:
    """One row per (Gaussian count, image size): ``{"gaussians", "size", "fwd_wall_ms", "fwd_cpu_ms",
    "fwd_bwd_wall_ms", "fwd_bwd_cpu_ms"}`` of the torch backend."""
    rows = []
    for n in counts:
        for size in sizes:
            params, viewmats, Ks = _scene(n, size, device)

            def forward():
                with torch.no_grad():
                    render_gaussians(**params, viewmats=viewmats, Ks=Ks, width=size, height=size, backend="torch")

            def forward_backward():
                color, alpha, depth = render_gaussians(**params, viewmats=viewmats, Ks=Ks, width=size, height=size, backend="torch")
                (color.sum() + depth.sum()).backward()

            fwd, both = _time(forward, repeats), _time(forward_backward, repeats)
            rows.append({"gaussians": n, "size": size, "fwd_wall_ms": 1000 * fwd[0], "fwd_cpu_ms": 1000 * fwd[1],
                         "fwd_bwd_wall_ms": 1000 * both[0], "fwd_bwd_cpu_ms": 1000 * both[1]})
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring): prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--counts", default="5000,20000,100000")
    parser.add_argument("--sizes", default="64,128,256")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, {torch.get_num_threads()} threads, backend torch")
    print(f"{'N':>8} {'HxW':>9} {'fwd wall ms':>12} {'fwd cpu ms':>11} {'fwd+bwd wall ms':>16} {'fwd+bwd cpu ms':>15}")
    counts, sizes = (int(c) for c in args.counts.split(",")), [int(s) for s in args.sizes.split(",")]
    for r in run_benchmark(list(counts), sizes, args.repeats, args.device):
        hw = f"{r['size']}x{r['size']}"
        print(f"{r['gaussians']:>8} {hw:>9} {r['fwd_wall_ms']:>12.1f} {r['fwd_cpu_ms']:>11.1f}"
              f" {r['fwd_bwd_wall_ms']:>16.1f} {r['fwd_bwd_cpu_ms']:>15.1f}")


if __name__ == "__main__":
    main()
