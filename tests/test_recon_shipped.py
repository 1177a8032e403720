"""The shipped tiny 4D reconstructor (checkpoints/4d/recon.safetensors, configs/train_recon_4d_tiny_*.yaml)
on held-out synthetic scenes, against trivial baselines computed here: what it does and does not beat
(docs/recon.md, "Tiny 4D reconstructor"). A change that breaks the model, its loading or the test-time
camera path fails these floors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from eval.protocols.recon import render_test_time_cameras
from fourd.data import generate_scene
from fourd.data.procedural import scene_seed
from fourd.metrics import psnr, ssim
from recon.model import load_reconstructor
from recon.train_task import split_views

WEIGHTS = Path(__file__).resolve().parents[1] / "checkpoints" / "4d" / "recon.safetensors"


@pytest.fixture(scope="module")
def scores() -> dict[str, dict[str, float]]:
    """Mean PSNR (dB) / SSIM over the 2 target views x 2 timesteps of 4 held-out scenes (seeds >= 1_000_000,
    never trained on; the synthetic benchmark's NVS setting: 4 inputs + 2 targets on a 60-degree arc, 28 x 28):
    the shipped model with test-time cameras (no ground truth), the same architecture untrained, the mean of
    all inputs, the mean of the 2 neighbouring inputs and a constant image (the inputs' mean colour)."""
    torch.manual_seed(0)
    models = {"model": load_reconstructor(weights=str(WEIGHTS)).eval(), "untrained": load_reconstructor("tiny-4d").eval()}
    inputs, targets = split_views(6, 4)  # [0, 2, 3, 5], [1, 4]
    values: dict[str, dict[str, list]] = {}
    for i in range(4):
        s = generate_scene(scene_seed(i, "held_out", 0), 6, 2, 28, 28, "dynamic", arc_degrees=60.0)
        x, gt = s.frames[inputs].float(), s.frames[targets].float()  # [4, T, 3, H, W], [2, T, 3, H, W]
        preds = {k: render_test_time_cameras(m, x[None], gt[None])["renders"][0].clamp(0, 1) for k, m in models.items()}
        preds["mean of all inputs"] = x.mean(0, keepdim=True).expand_as(gt)
        preds["mean of 2 neighbours"] = torch.stack([(x[0] + x[1]) / 2, (x[2] + x[3]) / 2])  # targets 1 and 4
        preds["constant colour"] = x.mean(dim=(0, 3, 4), keepdim=True).expand_as(gt)
        for k, p in preds.items():
            a, b = p.flatten(0, 1), gt.flatten(0, 1)
            values.setdefault(k, {"psnr": [], "ssim": []})
            values[k]["psnr"].append(psnr(a, b))
            values[k]["ssim"].append(ssim(a, b, window_size=11))
    return {k: {m: float(torch.cat(v).mean()) for m, v in d.items()} for k, d in values.items()}


def test_shipped_reconstructor_loads_from_its_metadata_at_28_pixels():
    model = load_reconstructor(weights=str(WEIGHTS))
    assert model.cfg.img_size == 28 and model.cfg.patch_size == 14
    assert model.cfg.temporal and model.cfg.camera_token_replacement and model.gaussian_head is not None
    assert WEIGHTS.stat().st_size < 10 * 2**20


def test_shipped_reconstructor_beats_its_init_and_a_constant_image_on_held_out_scenes(scores):
    """Measured floors (this repository's honest state, docs/recon.md), test-time cameras, 4 held-out scenes:
    model 15.65 dB / SSIM 0.203, untrained 6.17 / 0.000, constant colour 15.05 / 0.093, mean of all inputs
    16.86 / 0.421, mean of the 2 neighbours 16.88 / 0.484. So the model is far above its init, above a
    constant image in PSNR and SSIM and within 1.5 dB of the mean of all inputs, but it does NOT beat the
    input means (the issue's +3 dB target is missed). Raise these floors when a better model is shipped."""
    m = scores["model"]
    assert m["psnr"] > scores["untrained"]["psnr"] + 5.0, scores
    assert m["psnr"] > scores["constant colour"]["psnr"] and m["ssim"] > scores["constant colour"]["ssim"] + 0.05, scores
    assert m["psnr"] > scores["mean of all inputs"]["psnr"] - 1.5, scores
