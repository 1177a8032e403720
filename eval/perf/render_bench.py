"""Speed of the torch rasterizer: ``python -m eval.perf.render_bench [--quick] [--threads 1] [--device cpu]``.

Prints a progress line per measurement, then a table of forward and forward+backward times (median of
``--repeats`` runs) for random scenes of pixel-sized Gaussians (the regime of pixel-aligned
reconstructors: about one Gaussian per pixel footprint) at several Gaussian counts and resolutions,
one camera; writes the rows as JSON (``--out``, default ``outputs/perf/render_bench_<time>.json``).
``--quick``: 2,000 and 10,000 Gaussians at 64 x 64, one repeat.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from eval.perf.cli import Progress, add_common_args, write_json
from recon.render import render_gaussians

__all__ = ["run_benchmark", "perf_section", "main"]

FULL = dict(counts=(5000, 20000, 100000), sizes=(64, 128, 256), repeats=3)
QUICK = dict(counts=(2000, 10000), sizes=(64,), repeats=1)
FULL_RUN = "~12 min on this 2-core CPU, shared with other jobs"  # python -m eval.perf.render_bench, measured


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


def run_benchmark(counts=FULL["counts"], sizes=FULL["sizes"], repeats: int = 3, device: str = "cpu",
                  progress: Progress | None = None) -> list[dict]:
    """One row per (Gaussian count, image size): ``{"gaussians", "size", "fwd_wall_ms", "fwd_cpu_ms",
    "fwd_bwd_wall_ms", "fwd_bwd_cpu_ms"}`` of the torch backend; ``progress`` gets a step per row."""
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
            if progress is not None:
                progress.step(f"{n} Gaussians at {size}x{size}: fwd {1000 * fwd[0]:.0f} ms, fwd+bwd {1000 * both[0]:.0f} ms")
    return rows


def perf_section(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    """``python -m eval.perf``'s section (:data:`QUICK` or :data:`FULL`)."""
    grid = QUICK if quick else FULL
    progress = Progress("render_bench", len(grid["counts"]) * len(grid["sizes"]), quick, FULL_RUN)
    return "Torch rasterizer (one camera)", run_benchmark(grid["counts"], grid["sizes"], grid["repeats"], device, progress)


def main(argv: list[str] | None = None) -> list[dict]:
    """Command line (see the module docstring): prints progress and the table, writes the JSON, returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, "render_bench")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row (default 3; --quick: 1)")
    parser.add_argument("--counts", default=None, help="comma-separated Gaussian counts (default 5000,20000,100000; --quick: 2000,10000)")
    parser.add_argument("--sizes", default=None, help="comma-separated image sizes (default 64,128,256; --quick: 64)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = QUICK if args.quick else FULL
    counts = [int(c) for c in args.counts.split(",")] if args.counts else list(grid["counts"])
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(grid["sizes"])
    progress = Progress("render_bench", len(counts) * len(sizes), args.quick, FULL_RUN)
    rows = run_benchmark(counts, sizes, args.repeats or grid["repeats"], args.device, progress)
    seconds = progress.finish()
    print(f"device {args.device}, {torch.get_num_threads()} threads, backend torch")
    print(f"{'N':>8} {'HxW':>9} {'fwd wall ms':>12} {'fwd cpu ms':>11} {'fwd+bwd wall ms':>16} {'fwd+bwd cpu ms':>15}")
    for r in rows:
        hw = f"{r['size']}x{r['size']}"
        print(f"{r['gaussians']:>8} {hw:>9} {r['fwd_wall_ms']:>12.1f} {r['fwd_cpu_ms']:>11.1f}"
              f" {r['fwd_bwd_wall_ms']:>16.1f} {r['fwd_bwd_cpu_ms']:>15.1f}")
    write_json("render_bench", args.out, {"device": args.device, "threads": torch.get_num_threads(), "quick": args.quick,
                                         "seconds": seconds, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
