"""Generation protocol on tiny random models: per-scene captions, the monocular row, margins over the copy baselines."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from eval.protocols import datasets
from eval.protocols.generation import generate_grid, generate_monocular, scored_cells, vae_round_trip
from eval.protocols.scoring import MetricSpec, Scoreboard
from eval.protocols.suites import Models, generation_table
from fourd.data.procedural import procedural_scene

REPO = Path(__file__).resolve().parents[1]


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="eval", overrides=["progress=false", "sampler.steps=2", *overrides])


def _clip(seed=1_000_003, caption=None):
    s = procedural_scene(seed, 3, 5, 32, 32, "dynamic")
    return datasets.Clip(s.name, s.frames, s.extrinsics, s.intrinsics, s.depth, caption=caption or s.caption)


def test_caption_is_encoded_padded_to_text_len_and_changes_the_model_row(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    models = Models(_cfg("+text_encoder@text.encoder=tiny", "generation.modes=[both]"))
    c = models.dit.config
    a, b = "a red cube slides on a blue ground . three fixed cameras", "a blue sphere bounces on a brown ground . three fixed cameras"
    for text in ("a red cube", a):  # shorter than text_len (zero-padded) and longer (cut)
        ctx = models.context(text)
        (ref,) = models.text_encoder.encode([text])  # independent: the encoder's own output, padded / cut by hand
        n = min(ref.shape[0], c.text_len)
        assert ctx.shape == (1, c.text_len, c.text_dim)
        torch.testing.assert_close(ctx[0, :n], ref[:n].float())
        assert ctx[0, n:].abs().sum() == 0
    assert not torch.equal(ctx, models.context(b))
    assert Models(_cfg()).context(a).abs().sum() == 0  # no encoder: zeros, as before
    psnr = [generation_table(models.cfg, models, [_clip(caption=t)], baselines=False).rows()[0]["psnr"] for t in (a, b)]
    assert psnr[0] != psnr[1]  # same frames and noise, different caption -> different samples


def test_monocular_row_generates_the_column_and_is_scored_on_the_same_cells(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = _cfg()
    models = Models(cfg)
    clip = _clip()
    gt = clip.frames
    both = generate_grid(models.dit, models.vae, gt, models.context(), 2, 5.0, 0)
    mono = generate_monocular(models.dit, models.vae, gt[0], 3, models.context(), 2, 5.0, 0)
    ceiling = vae_round_trip(models.vae, gt)
    # both: the freeze-time column is the ground truth's (decoded from its latents); monocular never sees it
    torch.testing.assert_close(both[1:, 0], ceiling[1:, 0], atol=1e-4, rtol=0)
    assert (mono[1:, 0] - ceiling[1:, 0]).abs().mean() > 1e-2
    torch.testing.assert_close(mono[0], ceiling[0], atol=1e-4, rtol=0)  # view 0 = the given video (VAE round trip)
    gt_other = gt.clone()
    gt_other[1:] = torch.rand_like(gt_other[1:])
    torch.testing.assert_close(generate_monocular(models.dit, models.vae, gt_other[0], 3, models.context(), 2, 5.0, 0), mono)
    rows = {r["method"]: r for r in generation_table(cfg, models, [clip]).rows()}
    assert rows["ours (4D DiT)"]["images"] == rows["ours (4D DiT) monocular"]["images"] == int(scored_cells(3, 5).sum()) == 8
    assert rows["ours (4D DiT)"]["psnr"] != rows["ours (4D DiT) monocular"]["psnr"]
    # the codec diagnostic: the same-view copy decoded through the VAE, scored on the same cells
    copy_through_vae = vae_round_trip(models.vae, gt[:, :1].expand_as(gt))
    mask = scored_cells(3, 5)
    expected = float(-10 * torch.log10(((copy_through_vae[mask] - gt[mask]) ** 2).mean(dim=(1, 2, 3))).mean())
    assert abs(rows["copy same view (freeze-time ref.) through the VAE"]["psnr"] - expected) < 0.05
    with pytest.raises(ValueError, match="reference.view=0"):
        generation_table(_cfg("reference.view=1"), models, [clip])


def test_margins_over_the_better_copy_baseline_use_the_benchmark_mean():
    gt = torch.full((2, 1, 3, 8, 8), 0.5)
    board = Scoreboard(MetricSpec(lpips_weights="unused"))
    board._lpips_available = lambda: False
    # per-scene errors: baseline A wins scene 1, B wins scene 2, A is better on the benchmark mean PSNR
    for err_a, err_b, err_model in ((0.01, 0.1, 0.005), (0.05, 0.04, 0.02)):
        for name, err in (("A", err_a), ("B", err_b), ("model", err_model)):
            board.add_grid(name, gt + err, gt)
    board.add_margins(("A", "B"), "better copy baseline")
    mean = {n: sum(-20 * math.log10(e) for e in errs) / 2 for n, errs in
            (("A", (0.01, 0.05)), ("B", (0.1, 0.04)), ("model", (0.005, 0.02)))}
    rows = {r["method"]: r for r in board.rows()}
    assert rows["model"]["margin_db"] == pytest.approx(mean["model"] - mean["A"], abs=1e-3)
    assert rows["model"]["margin_ssim"] == pytest.approx(rows["model"]["ssim"] - rows["A"]["ssim"])
    assert "margin_db" not in rows["A"] and board.notes["better copy baseline"].startswith("A (")
