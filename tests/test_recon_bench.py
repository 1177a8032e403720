"""The reconstructor benchmark's core on the smallest combos: JSON layout, positive times, skipping."""
from __future__ import annotations

import json

from eval.perf.recon_bench import main, run_benchmark


def test_benchmark_writes_rows_with_positive_time_and_memory(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["--views", "2", "--timesteps", "1", "--repeats", "1", "--out", str(out)])
    doc = json.loads(out.read_text())
    assert (doc["config"], doc["height"], doc["width"]) == ("tiny", 28, 28)
    (row,) = doc["rows"]
    assert set(row) == {"views", "timesteps", "height", "width", "time_s", "peak_gib", "note"}
    assert (row["views"], row["timesteps"], row["note"]) == (2, 1, "")
    assert row["time_s"] > 0 and row["peak_gib"] > 0
    assert "| 2 |" in capsys.readouterr().out


def test_benchmark_skips_grids_larger_than_one_over_the_time_cap():
    rows = run_benchmark("tiny", views=(1, 2), timesteps=(1,), repeats=1, max_seconds=0.0)
    assert rows[0].time_s > 0 and rows[1].time_s is None
    assert rows[1].note.startswith("skipped: V=1,T=1 took")


def test_command_line_shows_progress_writes_json_by_default_and_no_profiler_noise(tmp_path):
    """As a user runs it (a fresh process; peak memory goes through torch.profiler): a progress line per
    grid, the table, the JSON under outputs/perf/ without --out, and none of Kineto's log lines."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "eval.perf.recon_bench", "--quick", "--views", "2", "--timesteps", "1"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "[recon_bench] 1/1 V=2 T=1:" in out and "| 2 |" in out
    assert "USDT" not in out and "gpuGetDeviceCount" not in out and "profiler_start" not in out
    (written,) = (tmp_path / "outputs" / "perf").glob("recon_bench_*.json")
    assert json.loads(written.read_text())["rows"][0]["views"] == 2 and f"wrote outputs/perf/{written.name}" in out
