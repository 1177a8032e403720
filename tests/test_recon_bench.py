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
