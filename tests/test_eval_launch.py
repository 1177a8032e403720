"""launch/eval.py end to end at tiny size: per-job JSON / markdown / PNGs and the sweep's combined table."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from eval.protocols.datasets import DatasetNotFoundError
from eval.runner import run

REPO = Path(__file__).resolve().parents[1]


def test_synthetic_benchmark_sweep_writes_tables_plots_and_a_combined_table(tmp_path, monkeypatch, hydra_restore_singletons):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no LPIPS backbone
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["launch/eval.py", "-m", "benchmark=synthetic", "benchmark.num_scenes=1",
                                      "sampler.steps=1,2", "progress=false", f"hydra.sweep.dir={tmp_path}/sweep"])
    runpy.run_path(str(REPO / "launch" / "eval.py"), run_name="__main__")  # in-process: the Hydra app as run from a shell
    for job in ("0", "1"):
        doc = json.loads((tmp_path / "sweep" / job / "results.json").read_text())
        gen, nvs = "generation (held-out cells)", "nvs (dynamic, 4 inputs)"
        assert set(doc["tables"]) == {gen, nvs, nvs + " (oracle cameras)"}
        methods = [r["method"] for r in doc["tables"][nvs]["rows"]]
        assert methods[0] == "ours (test-time cameras)" and "mean of all inputs" in methods
        generation = {r["method"]: r for r in doc["tables"][gen]["rows"]}
        assert generation["copy same view (freeze-time ref.)"]["lpips"] == "n/a (no vgg16-397923af.pth)"
        assert generation["ours (4D DiT)"]["FVD"] == "n/a (no I3D weights file)"
        assert generation["copy same view (freeze-time ref.)"]["flicker"] == 1.0  # a still video does not flicker
        # 3 views x 5 frames, reference row 0 and frame 0: 2 x 4 cells scored
        assert generation["ours (4D DiT)"]["images"] == 8
        cells = doc["tables"][gen]["cell_psnr"]["ours (4D DiT)"]
        assert cells[0] == [None] * 5 and all(isinstance(x, float) for x in cells[1][1:])
        assert "| ours (4D DiT) |" in (tmp_path / "sweep" / job / "results.md").read_text()
        plots = sorted(p.name for p in (tmp_path / "sweep" / job / "plots").iterdir())
        assert "generation_held_out_cells_cell_psnr.png" in plots and "nvs_dynamic_4_inputs_psnr.png" in plots
        assert (tmp_path / "sweep" / job / "plots" / "generation_held_out_cells_psnr.png").read_bytes()[:4] == b"\x89PNG"
    combined = (tmp_path / "sweep" / "combined.md").read_text()
    assert "| sampler.steps=1 | ours (4D DiT) |" in combined and "| sampler.steps=2 | ours (4D DiT) |" in combined


def test_missing_dataset_path_is_a_clear_error(tmp_path):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=["benchmark=llff", f"benchmark.root={tmp_path}/no_llff", "progress=false"])
    with pytest.raises(DatasetNotFoundError, match=r"no_llff .*benchmark.root"):
        run(cfg, str(tmp_path / "out"))


def test_eval_shipped_runs_every_table_from_weights_metadata(tmp_path, monkeypatch, hydra_restore_singletons):
    """`--config-name eval_shipped` on tiny random exports (configs read from their metadata): generation with
    captions (both + monocular rows, margins over the better copy baseline), NVS and the whole chain."""
    import torch

    from fourd.weights import write_safetensors
    from recon.model import load_reconstructor
    from recon.model.loading import recon_metadata
    from video4d import load_dit, load_vae
    from video4d.model.loading import dit_metadata
    from video4d.vae.loading import vae_metadata

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    for name, model, meta in (("dit", load_dit("tiny", init="random"), dit_metadata), ("vae", load_vae("tiny"), vae_metadata),
                              ("recon", load_reconstructor("tiny-4d"), recon_metadata)):
        write_safetensors(str(tmp_path / f"{name}.safetensors"), model.state_dict(), meta(model.config if name != "recon" else model.cfg))
    small = [f"benchmark.{t}.{k}=32" for t in ("generation", "chain") for k in ("height", "width")]
    monkeypatch.setattr(sys, "argv", ["launch/eval.py", "--config-name", "eval_shipped", "progress=false", "output.plots=false", "sampler.steps=1",
                                      "benchmark.num_scenes=1", "benchmark.nvs.frames=1", *small, f"hydra.run.dir={tmp_path}/run",
                                      *[f"{m}.weights={tmp_path}/{m}.safetensors" for m in ("dit", "vae", "recon")]])
    runpy.run_path(str(REPO / "launch" / "eval.py"), run_name="__main__")
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    gen, chain = "generation (held-out cells)", "whole chain (monocular video -> 3-view grid -> novel views)"
    assert set(doc["tables"]) == {gen, "nvs (dynamic, 4 inputs)", "nvs (dynamic, 4 inputs) (oracle cameras)", chain}
    rows = {r["method"]: r for r in doc["tables"][gen]["rows"]}
    assert {"ours (4D DiT)", "ours (4D DiT) monocular", "VAE round trip (upper bound)"} <= set(rows)
    best = doc["tables"][gen]["notes"]["better copy baseline over the benchmark"].rsplit(" (", 1)[0]
    assert rows["ours (4D DiT) monocular"]["margin_db"] == pytest.approx(rows["ours (4D DiT) monocular"]["psnr"] - rows[best]["psnr"])
    assert doc["config"]["text"]["encoder"]["config"] == "tiny" and doc["config"]["sampler"]["steps"] == 1
    md = (tmp_path / "run" / "results.md").read_text()
    assert "- better copy baseline over the benchmark: copy same" in md and "margin over best baseline (dB)" in md
    assert "DiT config from the weights' metadata (weights dit.safetensors)" in md and "text encoder tiny (seeded init)" in md
