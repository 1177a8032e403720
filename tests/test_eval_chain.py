"""The whole-chain protocol on tiny random models: scene layout, inputs, targets, rows."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import eval.protocols.chain as chain
from eval.protocols.suites import Models
from fourd.data.procedural import procedural_scene
from fourd.metrics import psnr
from recon.inference import fit_frames

REPO = Path(__file__).resolve().parents[1]
SEED = 1_000_003


def test_even_views_of_the_2v_minus_1_scene_are_the_v_view_scene():
    grid = procedural_scene(SEED, 3, 5, 32, 32, "dynamic", arc_degrees=90)
    fine = procedural_scene(SEED, 5, 5, 32, 32, "dynamic", arc_degrees=90)
    torch.testing.assert_close(fine.frames[0::2], grid.frames, atol=0, rtol=0)
    torch.testing.assert_close(fine.extrinsics[0::2], grid.extrinsics, atol=0, rtol=0)
    scene = chain.chain_scene(SEED, 3, 5, 32, 32, 90.0)
    torch.testing.assert_close(scene["targets"], fine.frames[1::2], atol=0, rtol=0)
    assert scene["caption"] == grid.caption and "three fixed cameras" in scene["caption"]


def test_chain_table_generates_from_view_0_and_scores_the_halfway_views(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    chain_node = "+benchmark.chain={views: 3, frames: 5, height: 32, width: 32, arc_degrees: 90.0, frame_stride: 4}"
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=["progress=false", "sampler.steps=1", "render.backend=torch", chain_node])
    seen = []

    def spy(dit, vae, video, views, *args):
        seen.append((video.clone(), views))
        return real(dit, vae, video, views, *args)

    real = chain.generate_monocular
    monkeypatch.setattr(chain, "generate_monocular", spy)
    board = chain.chain_table(cfg, Models(cfg), [SEED])
    scene = chain.chain_scene(SEED, 3, 5, 32, 32, 90.0)
    (video, views), = seen
    torch.testing.assert_close(video, scene["grid"][0], atol=0, rtol=0)  # the input is view 0's video only
    assert views == 3
    rows = {r["method"]: r for r in board.rows()}
    assert list(rows)[:2] == [chain.CHAIN, chain.RECON_ON_GT]
    # copy-left from the GT grid, recomputed here: target j (odd view 2j+1) <- grid view j, frames 0 and 4, at 28 x 28
    grid, targets = fit_frames(scene["grid"][:, [0, 4]], (28, 28)), fit_frames(scene["targets"][:, [0, 4]], (28, 28))
    expected = psnr(grid[:2].flatten(0, 1), targets.flatten(0, 1)).double().mean()
    assert rows["copy left input view (GT grid)"]["psnr"] == pytest.approx(float(expected), abs=1e-4)
    assert rows[chain.CHAIN]["images"] == 4  # 2 targets x 2 timesteps
    assert rows["copy left input view (generated grid)"]["psnr"] != rows["copy left input view (GT grid)"]["psnr"]
    best = max(rows[f"{n} (GT grid)"]["psnr"] for n in chain.NVS_BASELINES)
    assert rows[chain.CHAIN]["margin_db"] == pytest.approx(rows[chain.CHAIN]["psnr"] - best)
    # the monocular-only baseline: the input video (GT grid view 0) at the same time, for every target
    copy = grid[:1].expand(2, -1, -1, -1, -1)
    expected_copy = psnr(copy.flatten(0, 1), targets.flatten(0, 1)).double().mean()
    assert rows[chain.COPY_INPUT_VIDEO]["psnr"] == pytest.approx(float(expected_copy), abs=1e-4)
    for method in (chain.CHAIN, chain.RECON_ON_GT):
        assert rows[method]["margin_input_video_db"] == pytest.approx(rows[method]["psnr"] - rows[chain.COPY_INPUT_VIDEO]["psnr"])
