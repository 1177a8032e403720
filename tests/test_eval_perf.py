"""`python -m eval.perf` report writing on a minimal subset, and the GPU script's CPU-side logic."""
from __future__ import annotations

import json

import pytest

from eval.perf import gpu_checks
from eval.perf.__main__ import main as perf_main
from eval.perf.cli import rows_markdown


def test_quick_report_on_one_section(tmp_path):
    md, js = perf_main(["--quick", "--only", "render", "--device", "cpu", "--out", str(tmp_path)])
    doc = json.loads(open(js).read())
    assert list(doc["sections"]) == ["render"] and doc["settings"]["quick"] is True
    rows = doc["sections"]["render"]["rows"]
    assert [(r["gaussians"], r["size"]) for r in rows] == [(2000, 64), (10000, 64)]
    assert all(r["fwd_wall_ms"] > 0 and r["fwd_bwd_wall_ms"] > 0 for r in rows)
    text = open(md).read()
    assert "## render: Torch rasterizer" in text and "| gaussians | size | fwd_wall_ms |" in text
    with pytest.raises(SystemExit):
        perf_main(["--only", "nonsense", "--out", str(tmp_path)])


def test_rows_markdown_columns_in_first_seen_order():
    table = rows_markdown([{"a": 1, "b": 0.123456}, {"a": 2, "c": None}])
    assert table.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1 | 0.1235 | - |", "| 2 | - | - |"]


def test_gpu_checks_skip_cleanly_without_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_checks.torch.cuda, "is_available", lambda: False)
    path = gpu_checks.main(["--out", str(tmp_path)])
    assert "skipped: no CUDA device" in open(path).read()
    assert json.loads((tmp_path / "gpu_checks.json").read_text())["checks"] == {}


def test_gpu_checks_arguments_flops_and_report(tmp_path):
    args = gpu_checks.parse_args(["--only", "gsplat,dit_step", "--dit-grid", "4", "2", "--budget-s", "300"])
    assert args.checks == ["gsplat", "dit_step"] and args.dit_grid == [4, 2] and args.budget_s == 300
    with pytest.raises(SystemExit):
        gpu_checks.parse_args(["--only", "attention,bogus"])
    assert gpu_checks.peak_tflops("NVIDIA H200") == 989.4 and gpu_checks.peak_tflops("Some GPU") is None
    assert gpu_checks.peak_tflops("NVIDIA H100 80GB HBM3", override=500.0) == 500.0
    # 2 x 1 grid, 3 tokens per frame: N = 6 tokens, K = (2 + 1 - 1) * 3 + 4 text tokens = 10 keys
    assert gpu_checks.dit_step_flops(100, 2, 1, 3, dim=8, layers=2, text_len=4) == 6 * 100 * 6 + 3 * 4 * 6 * 10 * 8 * 2
    results = {"dit_step": {"rows": [{"model": "m", "step_s": 1.5, "mfu": 0.41}], "seconds": 2.0}}
    path = gpu_checks.write_report(results, str(tmp_path), {"gpu": "fake"})
    text = open(path).read()
    assert "## dit_step" in text and "| m | 1.5 | 0.41 |" in text


def test_attention_bench_grids_option_times_only_those_grids(tmp_path):
    from eval.perf import attention_bench

    assert attention_bench.parse_args(["--grids", "8,8,64;2,4,144"]).grids == [(8, 8, 64), (2, 4, 144)]
    for bad in ("8,8", "8,8,65", "a,b,c", ""):
        with pytest.raises(SystemExit):
            attention_bench.parse_args(["--grids", bad])
    argv = ["--grids", "2,2,64", "--methods", "dense,split", "--heads", "2", "--head-dim", "16", "--repeats", "1",
            "--no-blocks", "--no-memory", "--device", "cpu", "--out", str(tmp_path / "a.json")]
    rows = attention_bench.main(argv)
    assert [(r.V, r.T, r.tokens_per_frame, r.method) for r in rows] == [(2, 2, 64, "dense"), (2, 2, 64, "split")]
    assert all(r.fwd_bwd_ms > 0 for r in rows) and rows[1].speedup_fwd_bwd is not None


def test_gpu_attention_check_runs_its_cpu_path():
    """The kernel table on CPU (the same split code path, ATen's CPU kernel) and the speed table's rows
    with the time budget spent (block counts only)."""
    from eval.perf import gpu_attention

    rows = gpu_attention.run(gpu_checks.parse_args(["--only", "attention"]), deadline=0.0, device="cpu")
    kernels = [r for r in rows if r["table"] == "kernels"]
    assert len(kernels) == 6 and all(r["kernel"] == "cpu_flash" for r in kernels)
    for r in kernels:
        tol = 1e-4 if r["dtype"] == "torch.float32" else 0.1
        assert max(v for k, v in r.items() if k.startswith("max_abs_diff")) < tol, r
    speed = [r for r in rows if r["table"] == "speed"]
    assert {(r["V"], r["T"], r["tokens_per_frame"]) for r in speed} == set(gpu_attention.GRIDS)
    assert all(r["note"] == "skipped: time budget spent" for r in speed)
    assert all(r["block_ratio"] <= 1.05 for r in speed if "(chosen)" in r["method"])
