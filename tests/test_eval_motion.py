"""The benchmark with motion (eval/protocols/motion.py): the per-pixel oracle, the motion statistics, the tables."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from eval.protocols.motion import MOTION_TABLE, ORACLE, best_of_copies, motion_stats, moving_masks
from eval.protocols.suites import BENCHMARKS, Models

REPO = Path(__file__).resolve().parents[1]


def test_best_of_copies_picks_the_closer_copy_per_pixel():
    g = torch.Generator().manual_seed(0)
    gt, a, b = (torch.rand(2, 3, 3, 4, 5, generator=g) for _ in range(3))
    out = best_of_copies(gt, [a, b])
    for v, t, y, x in [(0, 0, 0, 0), (1, 2, 3, 4), (1, 1, 2, 0), (0, 2, 1, 3)]:
        ea, eb = ((c[v, t, :, y, x] - gt[v, t, :, y, x]).pow(2).sum() for c in (a, b))
        torch.testing.assert_close(out[v, t, :, y, x], a[v, t, :, y, x] if ea <= eb else b[v, t, :, y, x])
    err = lambda p: (p - gt).pow(2).sum(2)  # noqa: E731
    assert torch.all(err(out) <= torch.minimum(err(a), err(b)) + 1e-7)


def test_motion_stats_measure_the_change_inside_the_moving_masks():
    frames = torch.zeros(1, 3, 3, 8, 8)
    masks = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    masks[0, :, 0, 0] = 1  # object 1 rests at (0, 0), value 0.2 in every frame
    frames[0, :, :, 0, 0] = 0.2
    for t, x in enumerate((2, 3, 5)):  # object 2 moves right along row 4, white
        masks[0, t, 4, x] = 2
        frames[0, t, :, 4, x] = 1.0
    change, share = motion_stats(frames, moving_masks(masks, [2]))
    # frame 1: region = {(4,2), (4,3)}, both changed by 255 -> mean 255; frame 0: region {(4,2)}, no change
    torch.testing.assert_close(change[0], torch.tensor([0.0, 255.0, 255.0]))
    torch.testing.assert_close(share[0], torch.tensor([1, 2, 2]) / 64.0)
    frames[0, 2, 0, 4, 5] = 0.0  # one channel of the moved pixel back to black: that pixel's change is 2/3 * 255
    assert motion_stats(frames, moving_masks(masks, [2]))[0][0, 2] == pytest.approx((255 + 170) / 2)


def test_motion_benchmark_tables_on_tiny_random_models(tmp_path, monkeypatch):
    from eval.vae_cells import vae_cells
    from fourd.weights import write_safetensors
    from video4d import load_vae
    from video4d.vae.loading import vae_metadata

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    vae = load_vae("tiny-s4")
    write_safetensors(str(tmp_path / "vae.safetensors"), vae.state_dict(), vae_metadata(vae.config))
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=["benchmark=motion17", "progress=false", "sampler.steps=1", "benchmark.num_scenes=1",
                                                     "benchmark.generation.frames=9", "benchmark.generation.height=32",
                                                     "benchmark.generation.width=32", "vae.config=null", f"vae.weights={tmp_path}/vae.safetensors"])
    boards = BENCHMARKS["motion"](cfg, Models(cfg), str(tmp_path))
    gen = {r["method"]: r for r in boards["generation (held-out cells)"].rows()}
    copy_view = "copy same view (freeze-time ref.)"
    assert {ORACLE, copy_view, "copy same time (fixed-view ref.)", "VAE round trip (upper bound)", "ours (4D DiT) monocular"} <= set(gen)
    assert gen[ORACLE]["images"] == gen[copy_view]["images"] == 2 * 8  # views 1-2 x frames 1-8
    assert gen[ORACLE]["psnr"] >= max(gen[copy_view]["psnr"], gen["copy same time (fixed-view ref.)"]["psnr"])
    assert gen[ORACLE]["margin_db"] == pytest.approx(gen[ORACLE]["psnr"] - max(gen[copy_view]["psnr"], gen["copy same time (fixed-view ref.)"]["psnr"]))
    # eval.vae_cells reproduces the VAE round trip row without the DiT
    cells = vae_cells(str(tmp_path / "vae.safetensors"), seed=100000, num_scenes=1, frames=9, size=32)
    assert cells["cells_psnr"] == pytest.approx(gen["VAE round trip (upper bound)"]["psnr"], abs=1e-3) and len(cells["per_latent_frame_psnr"]) == 3
    mono = gen["ours (4D DiT) monocular"]
    assert mono["margin_same_time_db"] == pytest.approx(mono["psnr"] - gen["copy same time (fixed-view ref.)"]["psnr"])
    assert boards["generation (held-out cells)"].notes["monocular margin"].startswith(f"{mono['margin_same_time_db']:+.2f} dB over copy same time")
    per_frame = boards[MOTION_TABLE].rows()
    assert [r["method"] for r in per_frame] == [f"frame {t} (latent {(t + 3) // 4})" for t in range(1, 9)]
    # the per-frame freeze-time copy PSNR is that copy's per-cell PSNR map of the generation table
    cells = boards["generation (held-out cells)"].cell_maps()[copy_view]
    for t, row in enumerate(per_frame, start=1):
        assert row["psnr"] == pytest.approx((cells[1][t] + cells[2][t]) / 2, abs=1e-3)
        assert row["motion_l1_8bit"] > 0 and 0 < row["moving_share"] < 1
