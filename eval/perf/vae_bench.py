"""Benchmark: VAE encode/decode time and peak memory versus the number of frames.

Usage: ``python -m eval.perf.vae_bench --config tiny --size 64x64 --frames 5 9 17 33 [--device cuda]``.
Each row runs in a fresh process, so the CPU peak (max RSS) is per row; on CUDA the peak is
``torch.cuda.max_memory_allocated``. With the streaming cache the peak should stay flat in T
(latents and decoded frames themselves aside).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

__all__ = ["run_benchmark", "main"]


def _measure(config: str, frames: int, height: int, width: int, views: int, device: str, dtype: str) -> dict:
    """Encode then decode random frames ``[1, views, frames, 3, height, width]``; seconds and MB."""
    import torch

    from video4d.vae import load_vae

    torch.manual_seed(0)
    vae = load_vae(config, device=device, dtype=getattr(torch, dtype))
    x = torch.rand(1, views, frames, 3, height, width, device=device)
    row = {}
    with torch.no_grad():
        for name, run in (("encode", lambda: vae.encode(x)), ("decode", lambda: vae.decode(z))):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            out = run()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
                row[f"{name}_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
            row[f"{name}_s"] = time.perf_counter() - start
            if name == "encode":
                z = out
    row["latent_frames"] = z.shape[2]
    if not device.startswith("cuda"):
        row["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def run_benchmark(config: str = "tiny", frames=(5, 9, 17, 33), height: int = 64, width: int = 64, views: int = 1,
                  device: str = "cpu", dtype: str = "float32") -> list[dict]:
    """One row per frame count (each measured in a fresh process): ``{"frames", "latent_frames",
    "encode_s", "decode_s", peak memory}`` (see :func:`_measure`)."""
    ctx = mp.get_context("spawn")
    rows = []
    for f in frames:
        with ctx.Pool(1) as pool:
            rows.append({"frames": f, **pool.apply(_measure, (config, f, height, width, views, device, dtype))})
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print one table row (time, peak memory) per requested frame count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--size", default="64x64", help="HxW in pixels")
    parser.add_argument("--frames", type=int, nargs="+", default=[5, 9, 17, 33])
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    height, width = (int(s) for s in args.size.split("x"))
    print(f"config={args.config} size={height}x{width} views={args.views} device={args.device} dtype={args.dtype}")
    print(f"{'T':>5} {'T_lat':>6} {'enc s':>8} {'dec s':>8} {'peak MB (enc/dec or max RSS)':>30}")
    for row in run_benchmark(args.config, args.frames, height, width, args.views, args.device, args.dtype):
        peak = f"{row['encode_peak_mb']:.0f}/{row['decode_peak_mb']:.0f}" if "encode_peak_mb" in row else f"{row['max_rss_mb']:.0f}"
        print(f"{row['frames']:>5} {row['latent_frames']:>6} {row['encode_s']:>8.2f} {row['decode_s']:>8.2f} {peak:>30}")


if __name__ == "__main__":
    main()
