"""Every performance benchmark in one run: ``python -m eval.perf [--quick] [--only a,b] [--out DIR]``.

Sections (:data:`SECTIONS`), each a markdown table plus its rows in the JSON:

- ``attention``: the 4D attention backends and ablation mixes (:mod:`eval.perf.attention_bench`);
- ``recon``: the reconstructor's time / memory grid over views x timesteps, Table S1's layout
  (:mod:`eval.perf.recon_bench`; the tiny preset here, VGGT-1B size in ``gpu_checks``);
- ``render``: the torch rasterizer (:mod:`eval.perf.render_bench`);
- ``vae``: VAE encode / decode versus clip length (:mod:`eval.perf.vae_bench`);
- ``train``: training throughput of the tiny video and reconstructor tasks (a few steps each through
  :func:`fourd.train.hydra_app.run_task`, summarised by :mod:`eval.perf.train_throughput`);
- ``loader``: training data, loader samples/s at 0 / 2 workers and the share of a step waiting for
  data, raw and pre-encoded (:mod:`eval.perf.loader_bench`);
- ``inference``: end-to-end inference per stage (:func:`video4d.pipeline.generate` with its
  :class:`fourd.stages.StageRecorder`, then :func:`recon.inference.reconstruct` and rendering);
- ``sp``: DeepSpeed-Ulysses sequence parallelism of the DiT at SP = 1 and 2 on CPU ranks (gloo): time
  per training / sampling step, the all-to-all share, bytes exchanged, activations per rank
  (:mod:`eval.perf.sp_bench`; its own CLI writes ``sp_bench.md`` + ``sp_bench.json``).

Writes ``perf_report.md`` and ``perf_report.json`` into ``--out`` (default ``outputs/perf/<time>``).
``--quick`` shrinks every section to fit a few minutes on 2 CPU cores. GPU-only checks (compiled
FlexAttention, gsplat, VGGT-1B size, MFU) live in :mod:`eval.perf.gpu_checks`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict
from typing import Any, Callable, Optional

import torch

from eval.perf.report import rows_markdown
from fourd.weights import atomic_write_bytes

__all__ = ["SECTIONS", "write_report", "main"]

Section = Callable[[bool, str, str], tuple[str, list[dict[str, Any]]]]  # (quick, device, work dir) -> (title, rows)


def _attention(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    from eval.perf import attention_bench

    argv = ["--device", device] + (["--quick", "--max-tokens", "2400", "--repeats", "1", "--heads", "4", "--head-dim", "64"] if quick else [])
    rows = attention_bench.main(argv)
    return "Attention backends (forward / forward+backward, peak memory)", [asdict(r) for r in rows]


def _recon(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    from eval.perf.recon_bench import run_benchmark

    views, timesteps = ((2, 4), (1, 4)) if quick else ((2, 4, 8, 16), (1, 4, 8, 16))
    rows = run_benchmark("tiny", views, timesteps, device=device, repeats=1 if quick else 3)
    return "Reconstructor (tiny-4d, 28x28) forward time / peak memory per views x timesteps", [asdict(r) for r in rows]


def _render(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    from eval.perf.render_bench import run_benchmark

    counts, sizes = ((2000, 10000), (64,)) if quick else ((5000, 20000, 100000), (64, 128, 256))
    return "Torch rasterizer (one camera)", run_benchmark(counts, sizes, 1 if quick else 3, device)


def _vae(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    from eval.perf.vae_bench import run_benchmark

    frames = (5, 9) if quick else (5, 9, 17, 33)
    return "VAE (tiny, 64x64) encode / decode", run_benchmark("tiny", frames, 64, 64, 1, device)


def _train(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    from eval.ablations import compose_training
    from eval.perf.train_throughput import summarise
    from fourd.train.hydra_app import run_task
    from recon.train_task import ReconTask
    from video4d.train_task import VideoTask

    steps = 6 if quick else 20
    common = ["launcher=plain", f"train.steps={steps}", "train.checkpoint_every=0", "train.export=none", "train.progress=false"]
    rows = []
    for name, config, task in (("video4d (tiny DiT)", "train_video4d", VideoTask), ("recon (tiny-4d, dynamic)", "train_recon", ReconTask)):
        extra = ["stage=dynamic", "scene_export.enabled=false", "loss.lpips_weight=0"] if config == "train_recon" else []
        cfg = compose_training(config, common + extra)
        run_dir = os.path.join(work, config)
        run_task(cfg, lambda env, c=cfg, t=task: t(c, env), run_dir)
        rows.append({"task": name, **summarise(run_dir, skip=2)})
    return f"Training throughput ({steps} steps, first 2 left out, plain engine)", rows


def _inference(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    from fourd.stages import StageRecorder
    from recon.inference import reconstruct, render_views
    from recon.model import load_reconstructor
    from video4d import load_dit, load_vae
    from video4d.pipeline import GenerationSettings, generate
    from video4d.text_context import empty_context

    torch.manual_seed(0)
    dit = load_dit("tiny", init="random", device=device).eval()
    vae = load_vae("tiny", device=device)
    recon = load_reconstructor("tiny-4d").to(device).eval()
    V, F, size = (3, 5, 32) if quick else (4, 9, 64)
    video = torch.rand(1, F, 3, size, size)
    settings = GenerationSettings(mode="monocular", views=V, steps=2 if quick else 8, guidance_single=1.0)
    recorder = StageRecorder(device)
    context = empty_context(1, dit.config.text_len, dit.config.text_dim, device=device)
    frames = generate(dit, vae, video, context, settings, recorder=recorder)["frames"][0]  # [V, F, 3, H, W]
    side = 28 if quick else 56
    grid = torch.nn.functional.interpolate(frames.flatten(0, 1), size=(side, side), mode="bilinear", antialias=True)
    grid = grid.reshape(V, F, 3, side, side).to(device)
    with torch.no_grad(), recorder.stage("reconstruct", recon):
        scene = reconstruct(recon, grid)
    with torch.no_grad(), recorder.stage("render_views"):
        render_views(scene["gaussians"], scene["extrinsics"][None], scene["intrinsics"][None], side, side, backend="auto")
    rows = [{"stage": name, **record} for name, record in recorder.stages.items()]
    return f"End-to-end inference per stage (tiny models, {V} views x {F} frames, {settings.steps} Euler steps)", rows


def _loader(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    from eval.perf.loader_bench import section

    return section(quick, device, work)


def _sp(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    from eval.perf.sp_bench import describe, run_benchmark

    settings = ", ".join(f"{k}: {v}" for k, v in describe(quick).items())
    return f"Sequence parallelism (Ulysses) on CPU ranks, one core per rank ({settings})", [asdict(r) for r in run_benchmark(quick)]


SECTIONS: dict[str, Section] = {
    "attention": _attention, "recon": _recon, "render": _render, "vae": _vae, "train": _train, "loader": _loader, "inference": _inference, "sp": _sp,
}


def write_report(sections: dict[str, tuple[str, list[dict], float]], out_dir: str, settings: dict[str, Any]) -> tuple[str, str]:
    """``perf_report.md`` and ``perf_report.json`` from ``{name: (title, rows, seconds)}``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    lines = ["# Performance report", "", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    for name, (title, rows, seconds) in sections.items():
        lines += [f"## {name}: {title}", "", f"(section took {seconds:.1f} s)", "", rows_markdown(rows), ""]
    md, js = os.path.join(out_dir, "perf_report.md"), os.path.join(out_dir, "perf_report.json")
    atomic_write_bytes(md, "\n".join(lines).encode())
    doc = {"settings": settings, "sections": {n: {"title": t, "seconds": s, "rows": r} for n, (t, r, s) in sections.items()}}
    atomic_write_bytes(js, json.dumps(doc, indent=1, default=str).encode())
    return md, js


def main(argv: Optional[list[str]] = None) -> tuple[str, str]:
    """Command line (see the module docstring); returns the report paths."""
    parser = argparse.ArgumentParser(prog="python -m eval.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings: a few minutes on 2 CPU cores")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=os.path.join("outputs", "perf", time.strftime("%Y-%m-%d_%H-%M-%S")))
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    settings = {"quick": args.quick, "device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine()}
    if args.device.startswith("cuda"):
        settings["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    done = {}
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            start = time.perf_counter()
            title, rows = SECTIONS[name](args.quick, args.device, os.path.join(work, name))
            done[name] = (title, rows, time.perf_counter() - start)
            print(f"[eval.perf] {name}: {len(rows)} rows in {done[name][2]:.1f} s", flush=True)
    md, js = write_report(done, args.out, settings)
    print(f"[eval.perf] wrote {md} and {js}")
    return md, js


if __name__ == "__main__":
    main()
