"""The memory planner (eval/perf/memory_plan.py): its rows, its arguments, and its peak against the
peak measured on the CPU (eval/perf/memory_check.py) for the tiny and small presets on one rank;
the two-rank checks run inside the ZeRO-3 launch (tests/test_zero3.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval.perf.memory_plan import GB, PlanConfig, main, parse, plan

ROOT = Path(__file__).resolve().parents[1]
# ZeRO-3, fp32, checkpointing; buckets scaled to the small models; prefetching off (see memory_plan's docstring)
CHECK = ["zero=3", "dtype=fp32", "reduce_bucket_size=100000", "prefetch_bucket_size=0", "views=2", "frames=9"]
CHECKED = [["model=tiny", "height=256", "width=256", *CHECK], ["model=small", "height=128", "width=128", *CHECK]]
TOLERANCE = 0.15


def check_rows(rows: list[dict]) -> None:
    """Every measured peak is within TOLERANCE of the prediction."""
    assert rows
    for row in rows:
        assert abs(row["predicted"] / row["measured"] - 1) <= TOLERANCE, row


def test_rows_scale_with_ranks_and_offload():
    base = PlanConfig(model="wan2.1-t2v-14b", zero=3, dp=8)
    one, eight = plan(PlanConfig(model="wan2.1-t2v-14b", zero=3, dp=1)), plan(base)
    rows1, rows8 = dict((n, d) for n, d, _ in one.rows), dict((n, d) for n, d, _ in eight.rows)
    assert rows8["parameters"] == pytest.approx(rows1["parameters"] / 8)
    assert rows1["parameters"] == pytest.approx(14.288e9 * 2, rel=1e-3)  # bf16 weights of the 14B DiT
    offloaded = plan(PlanConfig(model="wan2.1-t2v-14b", zero=3, dp=1, offload="optimizer"))
    rows_off = {n: (d, h) for n, d, h in offloaded.rows}
    assert rows_off["optimizer states (fp32 master + Adam m, v)"][0] == 0 and rows_off["optimizer states (fp32 master + Adam m, v)"][1] > 40 * GB
    sp = plan(PlanConfig(model="wan2.1-t2v-14b", zero=3, dp=2, sp=4))
    act = {n: d for n, d, _ in sp.rows}["activations (peak of forward/backward)"]
    assert act < {n: d for n, d, _ in eight.rows}["activations (peak of forward/backward)"] / 3  # 1/4 of the tokens (+ all-to-all buffers)


def test_arguments_are_checked_and_the_table_prints(capsys):
    with pytest.raises(ValueError, match="zero=1 is not supported: allowed 0, 2, 3"):
        plan(parse(["zero=1"]))
    with pytest.raises(ValueError, match="viewz.*keys: model, views"):
        parse(["viewz=8"])
    text = main(["model=wan2.1-t2v-1.3b", "zero=2", "dp=8"])
    assert "| parameters |" in text and "| peak per rank |" in text and text in capsys.readouterr().out


ONE_RANK = """
import json, sys
from eval.perf import gpu_checks
from eval.perf.measure import single_rank_env
from eval.perf.memory_check import check
from tests.test_memory_plan import CHECKED
single_rank_env()
for row in check(CHECKED):
    print(json.dumps(row))
args = gpu_checks.parse_args(["--only", "dit_zero3", "--zero3-preset", "tiny", "--zero3-grid", "2", "9", "128", "128"])
print(json.dumps({"gpu_check": gpu_checks.run_check("dit_zero3", args, float("inf"))}))
"""


@pytest.mark.deepspeed
def test_predicted_peak_matches_the_measured_one_on_one_rank_and_the_gpu_check_runs_on_cpu():
    """One process: the planner checks of CHECKED, then gpu_checks' ZeRO-3 step (its CPU path, tiny preset)."""
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(ROOT / ".cache" / "torch_extensions"), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # single_rank_env picks a free port
    proc = subprocess.run([sys.executable, "-c", ONE_RANK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    rows, gpu = lines[:-1], lines[-1]["gpu_check"]
    assert len(rows) == len(CHECKED)
    check_rows(rows)
    (row,) = gpu
    assert row["model"] == "tiny" and row["tokens"] == 2 * 3 * 64 and abs(row["planner_over_measured"] - 1) <= TOLERANCE, row


def test_gpu_checks_skip_a_check_whose_package_is_missing(monkeypatch):
    from eval.perf import gpu_checks

    def needs_flash(args, deadline):
        import flash_attn_that_is_not_installed  # noqa: F401

    monkeypatch.setitem(gpu_checks.CHECKS, "needs_flash", needs_flash)
    monkeypatch.setitem(gpu_checks.REQUIRES, "gsplat", ("gsplat_that_is_not_installed",))
    args = gpu_checks.parse_args([])
    assert gpu_checks.run_check("gsplat", args, 0.0) == [
        {"note": "skipped: gsplat_that_is_not_installed not installed (pip install gsplat_that_is_not_installed)"}]
    (row,) = gpu_checks.run_check("needs_flash", args, 0.0)
    assert row["note"].startswith("skipped: flash_attn_that_is_not_installed not installed")
