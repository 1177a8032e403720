"""Every GPU-only check in one run (at most ~10 minutes on one H100 / H200), as one report.

    python -m eval.perf.gpu_checks [--out DIR] [--only attention,gsplat,recon,dit_step,sp_step,dit_zero3] [--budget-s 540]
    bash eval/perf/gpu_checks.sh DIR          # the same under `timeout 600`

Checks (:data:`CHECKS`), in order, each skipped with a note once the time budget is spent:

- ``attention``: :mod:`eval.perf.gpu_attention`: the split backend's fused CUDA kernels against a
  float64 reference, and compiled FlexAttention (chosen block layout and 128 x 128), split, dense-mask
  SDPA and unmasked SDPA / FlashAttention at the paper's grids in bf16: ms, TFLOP/s on the attended
  pairs, speed-up over dense and its ratio to the ideal, block counts, equality.
- ``gsplat``: gsplat vs the torch rasterizer on the same random scene: images' max |difference| and
  PSNR between them, forward and forward+backward ms.
- ``recon``: the reconstructor table (Table S1 layout) at VGGT-1B size with random weights, bf16,
  294 x 518 (:func:`eval.perf.recon_bench.run_benchmark`).
- ``dit_step``: one training step (forward, backward, AdamW) of Wan2.1-1.3B (random init, fp32
  weights, bf16 autocast, gradient checkpointing, flex attention) on a V x T grid at 480p: seconds per
  step and MFU = model FLOPs / (seconds x peak bf16 FLOP/s). Model FLOPs: ``6 P N`` for the
  parameters ``P`` over ``N`` tokens (all parameters: the text / time embeddings, which see fewer
  tokens, make this a slight overcount), plus attention ``3 x 4 N K d L`` (K keys per query:
  ``(V + T - 1)`` frames for self-attention, ``text_len`` for cross-attention; recomputation not counted).
- ``sp_step`` (needs 2 GPUs, else skipped with a note): the same step with DeepSpeed-Ulysses at SP = 1
  (each GPU alone) and SP = 2 (one grid over both GPUs, nccl) on a ``--sp-grid`` V x T grid: seconds
  per step, speed-up, the all-to-all share (an extra step synchronised around each exchange), peak
  memory per GPU, and the SP = 2 output's max relative difference to SP = 1 (bf16).
- ``dit_zero3``: one bf16 DeepSpeed ZeRO-3 training step of Wan2.1-1.3B (``--zero3-preset``) built
  sharded under ``deepspeed.zero.Init`` on this GPU, self-attention trainable, checkpointing, at
  8 views x 29 frames @ 144x256 (``--zero3-grid``): measured peak memory beside the memory
  planner's estimate (:mod:`eval.perf.memory_check`, :mod:`eval.perf.memory_plan`).

A check whose package is missing (gsplat; flash-attn only drops its row) prints a ``skipped`` line
and the others run. Without CUDA it writes a report saying so and exits 0. Writes
``gpu_checks.md`` and ``gpu_checks.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable, Optional

import torch

from eval.perf import gpu_attention
from fourd.weights import atomic_write_bytes

__all__ = ["CHECKS", "REQUIRES", "PEAK_BF16_TFLOPS", "peak_tflops", "dit_step_flops", "run_check", "write_report", "parse_args", "main"]

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0}  # dense bf16, SXM parts
WAN_480P_TOKENS = (30, 52)  # latent 60 x 104 patchified 2 x 2


def peak_tflops(device_name: str, override: Optional[float] = None) -> Optional[float]:
    """Dense bf16 peak TFLOP/s of a GPU named ``device_name`` (``override`` wins; None if unknown)."""
    if override is not None:
        return override
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def dit_step_flops(params: int, V: int, T: int, tokens_per_frame: int, dim: int, layers: int, text_len: int) -> float:
    """Model FLOPs of one training step (see the module docstring)."""
    N = V * T * tokens_per_frame
    attention_keys = (V + T - 1) * tokens_per_frame + text_len
    return 6.0 * params * N + 3.0 * 4.0 * N * attention_keys * dim * layers


def _time(fn: Callable[[], Any], repeats: int) -> float:
    from eval.perf.measure import median_seconds

    return median_seconds(fn, torch.device("cuda"), repeats)


def _gsplat(args, deadline: float) -> list[dict]:
    from eval.perf.render_bench import _scene
    from recon.render import render_gaussians

    rows = []
    for n, size in ((20000, 256), (100000, 512)):
        params, viewmats, Ks = _scene(n, size, "cuda")
        images = {}
        for backend in ("gsplat", "torch"):
            row: dict[str, Any] = {"gaussians": n, "size": size, "backend": backend}
            rows.append(row)
            if time.monotonic() > deadline:
                row["note"] = "skipped: time budget spent"
                continue

            def forward(b=backend):
                with torch.no_grad():
                    return render_gaussians(**params, viewmats=viewmats, Ks=Ks, width=size, height=size, backend=b)[0]

            def forward_backward(b=backend):
                color, _, depth = render_gaussians(**params, viewmats=viewmats, Ks=Ks, width=size, height=size, backend=b)
                (color.sum() + depth.sum()).backward()

            try:
                images[backend] = forward().float().clamp(0, 1)
                row["fwd_ms"] = 1e3 * _time(forward, args.repeats)
                row["fwd_bwd_ms"] = 1e3 * _time(forward_backward, args.repeats)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                row["note"] = "OOM"
        if len(images) == 2:
            mse = float((images["gsplat"] - images["torch"]).pow(2).mean())
            rows[-1]["max_abs_diff_vs_gsplat"] = float((images["gsplat"] - images["torch"]).abs().max())
            rows[-1]["psnr_vs_gsplat_db"] = float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()
    return rows


def _recon(args, deadline: float) -> list[dict]:
    from dataclasses import asdict

    from eval.perf.recon_bench import run_benchmark

    left = deadline - time.monotonic()
    if left < 60:
        return [{"note": "skipped: time budget spent"}]
    rows = run_benchmark("vggt-1b-4d", (2, 4, 8, 16), (1, 4, 8, 16), 294, 518, "cuda", "bf16", None, patch_embed_chunk=16,
                         head_chunk=4, repeats=2, max_seconds=min(8.0, left / 40), mem_cap_gib=130.0)
    return [asdict(r) for r in rows]


def _dit_step(args, deadline: float) -> list[dict]:
    from video4d import load_dit

    V, T = args.dit_grid
    row: dict[str, Any] = {"model": "wan2.1-t2v-1.3b", "V": V, "T": T, "latent": "60x104 (480p)"}
    if time.monotonic() > deadline:
        return [{**row, "note": "skipped: time budget spent"}]
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = load_dit({"preset": "wan2.1-t2v-1.3b", "gradient_checkpointing": True, "attention_backend": "flex"},
                     init="random", device=dev)
    c = model.config
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    x = torch.randn(1, V, T, c.in_dim, 60, 104, device=dev)
    context = torch.randn(1, c.text_len, c.text_dim, device=dev)
    timestep = torch.full((1,), 500.0, device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = (model(x, timestep, context) - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        seconds = _time(step, 2)
    except torch.OutOfMemoryError:
        return [{**row, "note": "OOM"}]
    flops = dit_step_flops(params, V, T, WAN_480P_TOKENS[0] * WAN_480P_TOKENS[1], c.dim, c.num_layers, c.text_len)
    peak = peak_tflops(torch.cuda.get_device_name(dev), args.peak_tflops)
    row.update(params=params, tokens=V * T * WAN_480P_TOKENS[0] * WAN_480P_TOKENS[1], step_s=seconds, model_tflop=flops / 1e12,
               achieved_tflops=flops / seconds / 1e12, peak_gib=torch.cuda.max_memory_allocated(dev) / 2**30,
               mfu=None if peak is None else flops / seconds / (peak * 1e12))
    if peak is None:
        row["note"] = "MFU n/a: unknown GPU peak, pass --peak-tflops"
    return [row]


def _sp_worker(rank: int, V: int, T: int, repeats: int, store: str, out: str, preset: str = "wan2.1-t2v-1.3b", latent: tuple = (60, 104)) -> None:
    """One of two ranks of :func:`_sp_step` (GPU ``rank``, nccl; without CUDA, a CPU smoke run over gloo with the split backend)."""
    import statistics

    import torch.distributed as dist

    from eval.perf.sp_bench import CommTimer
    from video4d import load_dit

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
    sync = (lambda: torch.cuda.synchronize(dev)) if cuda else (lambda: None)
    torch.manual_seed(0)  # the same weights and inputs on both ranks
    model = load_dit({"preset": preset, "gradient_checkpointing": True, "attention_backend": "flex" if cuda else "split"}, init="random", device=dev)
    c = model.config
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, V, T, c.in_dim, *latent, generator=g).to(dev)
    context = torch.randn(1, c.text_len, c.text_dim, generator=g).to(dev)
    timestep = torch.full((1,), 500.0, device=dev)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, fused=cuda)

    def step(reduce: bool) -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = (model(x, timestep, context) - x).pow(2).mean()
        loss.backward()
        if reduce:  # each rank holds its tokens' share: the sum over the group is the gradient
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(reduce: bool) -> tuple[float, Optional[float]]:
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        step(reduce)  # warm-up (compiles FlexAttention for this shape)
        seconds = []
        for _ in range(repeats):
            dist.barrier()
            sync()
            start = time.perf_counter()
            step(reduce)
            sync()
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds), torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None

    def forward(group) -> torch.Tensor:
        model.set_sequence_parallel(group)
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
            return model(x, timestep, context).float()

    row: dict[str, Any] = {"model": preset, "V": V, "T": T, "tokens": V * T * (latent[0] // 2) * (latent[1] // 2)}
    want, got = forward(None), forward(dist.group.WORLD)  # before any update: the same weights
    row["sp2_max_rel_diff_vs_sp1"] = float((got - want).abs().max() / want.abs().max())  # bf16: GEMM shapes differ
    del want, got
    model.set_sequence_parallel(None)
    row["sp1_step_s"], row["sp1_peak_gib"] = timed(reduce=False)
    model.set_sequence_parallel(dist.group.WORLD)
    row["sp2_step_s"], row["sp2_peak_gib"] = timed(reduce=True)
    row["speedup"] = row["sp1_step_s"] / row["sp2_step_s"]
    timer = CommTimer(model, sync=sync)
    sync()
    start = time.perf_counter()
    step(reduce=True)
    sync()
    row["sp2_all_to_all_share"] = timer.all_to_all_s / (time.perf_counter() - start)  # an extra step, synchronised around each exchange
    row["all_to_all_gib_per_step"] = timer.bytes / 2**30
    rows: list = [None, None]
    dist.all_gather_object(rows, row)
    if rank == 0:
        slowest = {k: max(r[k] for r in rows) for k in ("sp1_step_s", "sp2_step_s", "sp2_all_to_all_share")}
        with open(out, "w") as f:
            json.dump({**rows[0], **slowest, "speedup": slowest["sp1_step_s"] / slowest["sp2_step_s"]}, f)
    dist.barrier()
    dist.destroy_process_group()


def _sp_step(args, deadline: float) -> list[dict]:
    """DeepSpeed-Ulysses over two GPUs: the Wan2.1-1.3B training step of ``dit_step`` (bf16 autocast,
    checkpointing, flex) at SP = 1 (each GPU alone) and SP = 2 (one grid over both; 12 heads -> 6 per
    GPU), the all-to-all share, peak memory per GPU and the SP = 2 output against SP = 1."""
    import tempfile

    from eval.perf.measure import spawn_within

    V, T = args.sp_grid
    row: dict[str, Any] = {"model": "wan2.1-t2v-1.3b", "V": V, "T": T}
    gpus = torch.cuda.device_count()
    if gpus < 2:
        return [{**row, "note": f"skipped: needs 2 GPUs, {gpus} visible"}]
    if deadline - time.monotonic() < 120:
        return [{**row, "note": "skipped: time budget spent"}]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "sp_step.json")
        if not spawn_within(_sp_worker, (V, T, 2, os.path.join(tmp, "store"), out), 2, deadline - time.monotonic()):
            return [{**row, "note": "killed: time budget spent"}]
        with open(out) as f:
            return [json.load(f)]


def _dit_zero3(args, deadline: float) -> list[dict]:
    """One bf16 DeepSpeed ZeRO-3 training step of ``--zero3-preset`` built sharded (``deepspeed.zero.Init``)
    on this one GPU (self-attention trainable, checkpointing), its measured peak beside the planner's
    (:mod:`eval.perf.memory_check`, :mod:`eval.perf.memory_plan`). fp32 where there is no CUDA."""
    from eval.perf.measure import single_rank_env
    from eval.perf.memory_check import check
    from eval.perf.memory_plan import parse, plan

    V, F, H, W = args.zero3_grid
    argv = [f"model={args.zero3_preset}", "zero=3", "dp=1", f"dtype={'bf16' if torch.cuda.is_available() else 'fp32'}", f"views={V}",
            f"frames={F}", f"height={H}", f"width={W}", "checkpointing=true"]
    row: dict[str, Any] = {"model": args.zero3_preset, "grid": f"{V} x {F} @ {H}x{W}", "tokens": plan(parse(argv)).tokens}
    if time.monotonic() > deadline:
        return [{**row, "note": "skipped: time budget spent"}]
    single_rank_env()
    try:
        result = check([argv])[0]
    except torch.OutOfMemoryError:
        return [{**row, "note": "OOM"}]
    return [{**row, "measured_peak_gib": result["measured"] / 2**30, "planner_peak_gib": result["predicted"] / 2**30,
             "planner_over_measured": result["ratio"], "note": "planner terms: python -m eval.perf.memory_plan " + " ".join(argv)}]


CHECKS: dict[str, Callable[[argparse.Namespace, float], list[dict]]] = {
    "attention": gpu_attention.run, "gsplat": _gsplat, "recon": _recon, "dit_step": _dit_step, "sp_step": _sp_step, "dit_zero3": _dit_zero3,
}
REQUIRES = {"gsplat": ("gsplat",), "dit_zero3": ("deepspeed",)}  # packages a check cannot run without


def run_check(name: str, args: argparse.Namespace, deadline: float) -> list[dict]:
    """``CHECKS[name]``, or one row saying why it was skipped: a package it needs is not installed
    (:data:`REQUIRES`, or an import inside the check failed); the other checks run regardless."""
    import importlib.util

    missing = [p for p in REQUIRES.get(name, ()) if importlib.util.find_spec(p) is None]
    if missing:
        return [{"note": f"skipped: {', '.join(missing)} not installed (pip install {' '.join(missing)})"}]
    try:
        return CHECKS[name](args, deadline)
    except ModuleNotFoundError as exc:
        return [{"note": f"skipped: {exc.name} not installed ({exc})"}]


def write_report(results: dict[str, dict[str, Any]], out_dir: str, header: dict[str, Any]) -> str:
    """``gpu_checks.md`` + ``gpu_checks.json`` from ``{check: {"rows", "seconds"}}``; returns the markdown path."""
    from eval.perf.cli import rows_markdown

    os.makedirs(out_dir, exist_ok=True)
    lines = ["# GPU checks", "", ", ".join(f"{k}: {v}" for k, v in header.items()), ""]
    for name, result in results.items():
        lines += [f"## {name}", "", f"({result['seconds']:.1f} s)", "", rows_markdown(result["rows"]), ""]
    path = os.path.join(out_dir, "gpu_checks.md")
    atomic_write_bytes(path, "\n".join(lines).encode())
    atomic_write_bytes(os.path.join(out_dir, "gpu_checks.json"), json.dumps({"header": header, "checks": results}, indent=1, default=str).encode())
    return path


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring); unknown check names are an error."""
    p = argparse.ArgumentParser(prog="python -m eval.perf.gpu_checks", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("outputs", "gpu_checks"), help="report directory")
    p.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget; later checks are skipped once spent")
    p.add_argument("--heads", type=int, default=12, help="attention heads (Wan2.1-1.3B: 12; 14B: 40)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up")
    p.add_argument("--mem-cap-gib", type=float, default=40.0, help="skip dense-mask SDPA when its N x N mask + bias exceed this")
    p.add_argument("--dit-grid", type=int, nargs=2, default=[8, 8], metavar=("V", "T"), help="grid of the DiT training step")
    p.add_argument("--sp-grid", type=int, nargs=2, default=[4, 4], metavar=("V", "T"), help="grid of the two-GPU sequence-parallel step")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s for MFU (default: from the GPU name)")
    p.add_argument("--zero3-preset", default="wan2.1-t2v-1.3b", help="DiT preset of the ZeRO-3 step (dit_zero3)")
    p.add_argument("--zero3-grid", type=int, nargs=4, default=[8, 29, 144, 256], metavar=("V", "FRAMES", "H", "W"),
                   help="views, pixel frames and pixel size of the ZeRO-3 step (dit_zero3)")
    args = p.parse_args(argv)
    args.checks = [c for c in args.only.split(",") if c]
    unknown = sorted(set(args.checks) - set(CHECKS))
    if unknown:
        p.error(f"unknown checks {unknown}; choose from {list(CHECKS)}")
    return args


def main(argv: Optional[list[str]] = None) -> str:
    """Run the checks (or write a 'skipped' report without CUDA); returns the markdown path."""
    args = parse_args(argv)
    header: dict[str, Any] = {"torch": torch.__version__, "checks": ",".join(args.checks)}
    if not torch.cuda.is_available():
        header["status"] = "skipped: no CUDA device (these checks need an H100/H200; run them where one is lent)"
        print(f"[gpu_checks] {header['status']}")
        return write_report({}, args.out, header)
    header["gpu"] = torch.cuda.get_device_name(0)
    deadline = time.monotonic() + args.budget_s
    results = {}
    for name in args.checks:
        start = time.perf_counter()
        results[name] = {"rows": run_check(name, args, deadline), "seconds": time.perf_counter() - start}
        notes = [r["note"] for r in results[name]["rows"] if str(r.get("note", "")).startswith("skipped: ") and "budget" not in r["note"]]
        status = notes[0] if notes else f"{results[name]['seconds']:.1f} s"
        print(f"[gpu_checks] {name}: {status}", flush=True)
        write_report(results, args.out, header)  # partial results survive a kill
        torch.cuda.empty_cache()
    path = write_report(results, args.out, header)
    print(f"[gpu_checks] wrote {path}")
    return path


if __name__ == "__main__":
    main()
