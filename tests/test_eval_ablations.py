"""Ablation runners at a tiny budget: variants trained by the training entry or given as weights, then one table."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from eval.ablations import attention_ablation, compose_training, variant_plan
from eval.protocols.suites import Models, generation_table, held_out_seeds
from eval.protocols import datasets
from fourd.data.procedural import procedural_scene
from fourd.weights import write_safetensors
from video4d import load_dit
from video4d.model.loading import dit_metadata

REPO = Path(__file__).resolve().parents[1]


def _cfg(overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="eval", overrides=["progress=false", "generation.modes=[both]", *overrides])


def test_variant_settings_become_training_overrides():
    train_config, weights, overrides, fields = variant_plan({"attention_variant": "sequential", "trainable": ["*"],
                                                             "overrides": ["train.steps=3"]}, "model", "train_dit_4d_tiny", ["data.views=2"])
    assert (train_config, weights, fields["attention_variant"]) == ("train_dit_4d_tiny", None, "sequential")
    cfg = compose_training(train_config, overrides)
    assert cfg.model.trainable == ["*"] and cfg.model.attention_variant == "sequential"
    assert cfg.train.steps == 3 and cfg.data.views == 2 and cfg.model.weights == "checkpoints/base/dit.safetensors"
    assert variant_plan({"weights": "w.safetensors", "train_config": "x"}, "model", "y", [])[:2] == ("x", "w.safetensors")


def test_attention_ablation_trains_a_variant_and_evaluates_given_weights_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(3)
    given = load_dit("tiny", init="random")
    weights = str(tmp_path / "given.safetensors")
    write_safetensors(weights, given.state_dict(), dit_metadata(given.config))
    cfg = _cfg(["benchmark=ablation_attention", "benchmark.num_scenes=1",
                'benchmark.train_overrides=["train.steps=1","train.checkpoint_every=0","train.progress=false","data.views=2"]'])
    cfg.benchmark.variants = {"fused": {"attention_variant": "fused"}, "shipped": {"weights": weights}}
    (board,) = attention_ablation(cfg, Models(cfg), str(tmp_path)).values()
    rows = {r["method"]: r for r in board.rows()}
    assert list(rows)[:2] == ["fused (1 steps)", "shipped (weights given.safetensors)"]
    assert "copy same view (freeze-time ref.)" in rows and rows["fused (1 steps)"]["images"] == 4  # view 1 x frames 1-4
    assert (tmp_path / "train" / "fused" / "export" / "model.safetensors").exists()
    assert not (tmp_path / "train" / "shipped").exists()  # given weights: no training
    # the same export through the plain benchmark path (preset from its metadata) scores the same
    plain = _cfg(["dit.preset=null", f"dit.weights={weights}", "benchmark.num_scenes=1"])
    train = compose_training("train_video4d", ["data.views=2"])
    scenes = [procedural_scene(s, 2, int(train.schedule.frames[-1][1]), train.data.height, train.data.width, "dynamic")
              for s in held_out_seeds(cfg.benchmark, moving_only=True)]
    clips = [datasets.Clip(s.name, s.frames, s.extrinsics, s.intrinsics, s.depth, caption=s.caption) for s in scenes]
    expected = generation_table(plain, Models(plain), clips, baselines=False).rows()[0]["psnr"]
    assert rows["shipped (weights given.safetensors)"]["psnr"] == pytest.approx(expected, abs=1e-6)
