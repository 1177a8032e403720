"""An ablation runner at a tiny budget: each variant trained by the training entry, then one table."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from eval.ablations import attention_ablation
from eval.protocols.suites import Models

REPO = Path(__file__).resolve().parents[1]


def test_attention_ablation_trains_each_variant_and_scores_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    overrides = ["benchmark=ablation_attention", "benchmark.variants=[fused,sequential]", "benchmark.num_scenes=1", "progress=false", "generation.modes=[both]",
                 'benchmark.train_overrides=["train.steps=1","train.checkpoint_every=0","train.progress=false","data.views=2"]']
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=overrides)
    (board,) = attention_ablation(cfg, Models(cfg), str(tmp_path)).values()
    rows = {r["method"]: r for r in board.rows()}
    assert list(rows)[:2] == ["fused (1 steps)", "sequential (1 steps)"]
    assert "copy same view (freeze-time ref.)" in rows and rows["fused (1 steps)"]["images"] == 4  # view 1 x frames 1-4
    assert rows["fused (1 steps)"]["psnr"] != rows["sequential (1 steps)"]["psnr"]  # two different trained models
    for variant in ("fused", "sequential"):
        assert (tmp_path / "train" / variant / "export" / "model.safetensors").exists()
