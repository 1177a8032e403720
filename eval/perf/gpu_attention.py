"""The attention part of :mod:`eval.perf.gpu_checks` (CUDA only; about 3 minutes on one H100).

Two tables as rows:

- **kernels**: the split backend through each fused CUDA kernel it uses (FlashAttention-2 for bf16 /
  fp16, memory-efficient for fp32) against a float64 dense-mask reference on a small grid: max
  |difference| of the output and of dq, dk, dv (covers the CUDA-only lines of
  :mod:`video4d.attention.kernels`).
- **speed**: the view-or-time pattern at the grids users train and sample (V x T in 4x4, 8x8, 8x16
  latent frames at 144x256, 288x512 and 480x832: 144, 576 and 1560 tokens per frame), 12 heads x
  128 (Wan2.1-1.3B), bf16: compiled FlexAttention with the chosen block layout and with 128 x 128
  blocks (before issue 22; at V = T = 8 only), split (fused), dense-mask SDPA (where its N x N
  mask fits 8 GiB and ``--mem-cap-gib``) and unmasked SDPA / FlashAttention (if ``flash_attn`` imports; a missing package
  skips only its rows). Forward and forward+backward median ms, achieved TFLOP/s on the attended
  pairs (forward ``4 P d h``, backward 2.5x that, ``P`` attended pairs; unmasked methods attend all
  ``N^2``), speed-up over dense-mask SDPA (else over unmasked SDPA) and its ratio to the ideal
  ``V T / (V + T - 1)``, FlexAttention's computed / needed blocks, auto's pick, and max |difference|
  of the output and dq against the reference (dense where it ran, else split). A method that
  fails (a compile error, out of memory) notes its error and the others go on; grids are timed
  8 x 8 first, until :data:`BUDGET_S` or the overall budget is spent.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

__all__ = ["GRIDS", "attended_flops", "run"]

GRIDS = tuple((V, T, p) for V, T in ((8, 8), (4, 4), (8, 16)) for p in (144, 576, 1560))  # 8 x 8 first
BUDGET_S = 240.0  # this check's share of gpu_checks' budget (FlexAttention compiles once per grid and layout)
DENSE_CAP_GIB = 8.0  # dense-mask SDPA only up to this N x N mask (it is the slow reference)


def attended_flops(pairs: float, heads: int, head_dim: int, backward: bool) -> float:
    """FLOPs of attention over ``pairs`` (query, key) pairs: ``4 pairs d h`` forward, 3.5x with backward."""
    return 4.0 * pairs * head_dim * heads * (3.5 if backward else 1.0)


def _kernel_rows(dev: torch.device) -> list[dict]:
    from video4d.attention import attend
    from video4d.attention.kernels import kernel_for
    from video4d.attention.split import split_attention
    from video4d.grid import GridShape

    grid, rows = GridShape(3, 4, 6, 10), []
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for head_dim in (64, 128):
            gen = torch.Generator(device=dev).manual_seed(0)
            q, k, v, g = (torch.randn(2, grid.num_tokens, 4, head_dim, generator=gen, device=dev) for _ in range(4))
            ins = [x.to(dtype).requires_grad_() for x in (q, k, v)]
            ref_ins = [x.detach().double().requires_grad_() for x in ins]
            out = split_attention(*ins, grid)
            ref = attend(*ref_ins, grid, "view_or_time", "dense")
            grads = torch.autograd.grad(out, ins, g.to(dtype))
            ref_grads = torch.autograd.grad(ref, ref_ins, g.double())
            row = {"dtype": str(dtype), "head_dim": head_dim, "kernel": kernel_for(ins[0].transpose(1, 2)),
                   "max_abs_diff_out": float((out.double() - ref).detach().abs().max())}
            for name, a, b in zip(("dq", "dk", "dv"), grads, ref_grads):
                row[f"max_abs_diff_{name}"] = float((a.double() - b).detach().abs().max())
            rows.append(row)
    return rows


def _methods(grid, flash_attn_func, with_before: bool) -> dict[str, Callable]:
    from video4d.attention import BlockLayout, attend, choose_layout
    from video4d.attention.dense import full_attention
    from video4d.attention.flex import flex_attention_grid

    chosen = choose_layout(grid, "view_or_time")
    methods = {f"flex {chosen} (chosen)": lambda q, k, v: flex_attention_grid(q, k, v, grid, layout=chosen, compile=True)}
    if with_before and chosen != BlockLayout():
        methods["flex 128x128 (before)"] = lambda q, k, v: flex_attention_grid(q, k, v, grid, layout=BlockLayout(), compile=True)
    methods["split (fused)"] = lambda q, k, v: attend(q, k, v, grid, "view_or_time", "split")
    methods["dense-mask SDPA"] = lambda q, k, v: attend(q, k, v, grid, "view_or_time", "dense")
    methods["full SDPA (no mask)"] = full_attention
    if flash_attn_func is not None:
        methods["FlashAttention (no mask)"] = flash_attn_func
    return methods


def _speed_rows(args, deadline: float, dev: torch.device, repeat: Callable) -> list[dict]:
    from eval.perf.attention_bench import grid_of
    from eval.perf.measure import peak_bytes
    from video4d.attention import BlockLayout, choose_backend, choose_layout, sparsity_report

    try:
        from flash_attn import flash_attn_func
    except ImportError:
        flash_attn_func = None
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)  # one compile per grid and layout
    rows = []
    for V, T, p in GRIDS:
        grid = grid_of(V, T, p)  # 144 / 576 / 1560 tokens per frame: 144x256, 288x512, 480x832
        N, ideal = grid.num_tokens, V * T / (V + T - 1)
        report = sparsity_report(grid, choose_layout(grid, "view_or_time"))
        before = sparsity_report(grid, BlockLayout())
        attended = N * N * (1.0 - report.element_sparsity)
        shape = (1, N, args.heads, 128)
        gen = torch.Generator(device=dev).manual_seed(0)
        q, k, v, grad = (torch.randn(shape, generator=gen, device=dev, dtype=torch.bfloat16) for _ in range(4))
        reference: dict[str, Any] = {}
        grid_rows = []
        for name, fn in _methods(grid, flash_attn_func, with_before=V == T == 8).items():
            row: dict[str, Any] = {"V": V, "T": T, "tokens_per_frame": p, "N": N, "method": name}
            if name.startswith("flex"):
                r = report if "chosen" in name else before
                row.update(computed_blocks=r.computed_blocks, needed_blocks=round(r.needed_blocks, 1), block_ratio=r.work_ratio)
            grid_rows.append(row)
            if time.monotonic() > deadline:
                row["note"] = "skipped: time budget spent"
                continue
            if name.startswith("dense") and N * N * 5 > min(args.mem_cap_gib, DENSE_CAP_GIB) * 2**30:
                row["note"] = f"skipped: N x N mask ~{N * N * 5 / 2**30:.0f} GiB > {min(args.mem_cap_gib, DENSE_CAP_GIB):.0f} GiB"
                continue
            qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))

            def fwd_bwd():
                fn(qg, kg, vg).backward(grad)
                qg.grad = kg.grad = vg.grad = None

            try:
                with torch.no_grad():
                    out = fn(q, k, v).float()
                fn(qg, kg, vg).backward(grad)
                dq = qg.grad.float()
                row["fwd_ms"] = 1e3 * repeat(lambda: fn(q, k, v))
                row["fwd_bwd_ms"] = 1e3 * repeat(fwd_bwd)
                row["fwd_bwd_peak_gib"] = peak_bytes(fwd_bwd, dev) / 2**30
            except Exception as error:  # noqa: BLE001 - one failing method (compile error, OOM) must not end the check
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                row["note"] = f"error: {type(error).__name__}: {error}"[:300]
                continue
            pairs = N * N if "no mask" in name else attended
            row["fwd_tflops"] = attended_flops(pairs, args.heads, 128, False) / row["fwd_ms"] / 1e9
            row["fwd_bwd_tflops"] = attended_flops(pairs, args.heads, 128, True) / row["fwd_bwd_ms"] / 1e9
            if "no mask" in name:
                continue
            if not reference:
                reference.update(name=name, out=out, dq=dq)
                row["note"] = "equality reference"
            else:
                row["max_abs_diff_out"] = float((out - reference["out"]).abs().max())
                row["max_abs_diff_dq"] = float((dq - reference["dq"]).abs().max())
                row["note"] = f"vs {reference['name']}"
        baseline = next((r for r in grid_rows if r["method"] == "dense-mask SDPA" and "fwd_ms" in r), None)
        baseline = baseline or next((r for r in grid_rows if r["method"] == "full SDPA (no mask)" and "fwd_ms" in r), None)
        picks = "/".join(choose_backend("cuda", grid, "view_or_time", training) for training in (True, False))
        for row in grid_rows:
            row["auto"] = picks
            if baseline and "fwd_ms" in row and "no mask" not in row["method"]:
                row["speedup_over"] = baseline["method"]
                for phase in ("fwd", "fwd_bwd"):
                    row[f"speedup_{phase}"] = baseline[f"{phase}_ms"] / row[f"{phase}_ms"]
                    row[f"of_ideal_{phase}"] = row[f"speedup_{phase}"] / ideal
        rows += grid_rows
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def run(args, deadline: float, device: str = "cuda") -> list[dict]:
    """Both tables (see the module docstring) as rows, the kernel rows first (``table`` says which)."""
    from eval.perf.measure import median_seconds

    dev = torch.device(device)

    def repeat(fn: Callable[[], Any]) -> float:
        return median_seconds(fn, dev, args.repeats)

    deadline = min(deadline, time.monotonic() + BUDGET_S)
    try:
        rows = [{"table": "kernels", **r} for r in _kernel_rows(dev)]
    except Exception as error:  # noqa: BLE001 - the speed table still runs
        rows = [{"table": "kernels", "note": f"error: {type(error).__name__}: {error}"[:300]}]
    return rows + [{"table": "speed", **r} for r in _speed_rows(args, deadline, dev, repeat)]
