"""eval/nvs_procedural.py: the chain family's held-out NVS, scored by eval.protocols.suites.nvs_tables."""
from __future__ import annotations

import torch

from eval.nvs_procedural import procedural_nvs
from fourd.data.procedural import HELD_OUT_SEED_START, procedural_scene
from fourd.metrics import psnr
from recon.model import load_reconstructor


def test_procedural_nvs_scores_the_halfway_views_against_the_neighbour_mean():
    torch.manual_seed(0)
    model = load_reconstructor("tiny-4d")
    boards = procedural_nvs(model, 28, num_scenes=1, frames=1)
    rows = {r["method"]: r for r in boards["nvs"].rows()}
    scene = procedural_scene(HELD_OUT_SEED_START, 5, 1, 28, 28, "dynamic", arc_degrees=90.0)
    mean_of_two = (scene.frames[[0, 2]] + scene.frames[[2, 4]]) / 2  # targets 1 and 3 between inputs 0, 2, 4
    want = float(psnr(mean_of_two.flatten(0, 1), scene.frames[[1, 3]].flatten(0, 1)).mean())
    assert abs(rows["mean of the 2 neighbouring inputs"]["psnr"] - want) < 1e-3
    assert rows["ours (test-time cameras)"]["images"] == 2 and "nvs (oracle cameras)" in boards
