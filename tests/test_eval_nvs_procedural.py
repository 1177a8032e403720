"""eval/nvs_procedural.py: the chain family's held-out NVS, scored by eval.protocols.suites.nvs_tables."""
from __future__ import annotations

import torch

from eval.nvs_procedural import procedural_nvs
from eval.protocols.suites import GT_GEOMETRY, GT_GEOMETRY_FILLED
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


def _ceiling_batch(size: int, inputs: list[int], targets: list[int]) -> dict:
    scene = procedural_scene(HELD_OUT_SEED_START, 5, 1, size, size, "dynamic", arc_degrees=90.0)
    batch = {"inputs": scene.frames[inputs][None], "targets": scene.frames[targets][None], "in_depth": scene.depth[inputs][None]}
    for key, views in (("in", inputs), ("tgt", targets)):
        batch[f"{key}_ext"], batch[f"{key}_K"] = scene.extrinsics[views][None], scene.intrinsics[views][None]
    return batch


def test_ground_truth_geometry_ceiling_re_renders_its_own_view_and_needs_the_true_depth():
    from eval.protocols.recon import render_ground_truth_geometry

    own = _ceiling_batch(56, [0], [0])
    renders, alphas = render_ground_truth_geometry(own, backend="torch")
    assert alphas.min() > 0.98  # every pixel of the input's own view is covered by its own Gaussians
    assert float(psnr(renders[0, 0].clamp(0, 1), own["targets"][0, 0])) > 22.0  # eps2d = 0.3 blurs it a little
    halfway = _ceiling_batch(56, [0, 2, 4], [1, 3])
    true, _ = render_ground_truth_geometry(halfway, backend="torch")
    wrong, _ = render_ground_truth_geometry({**halfway, "in_depth": halfway["in_depth"] * 1.5}, backend="torch")
    gt = halfway["targets"][0].flatten(0, 1)
    assert float(psnr(true[0].flatten(0, 1).clamp(0, 1), gt).mean()) > float(psnr(wrong[0].flatten(0, 1).clamp(0, 1), gt).mean()) + 1.0
    empty, empty_alpha = render_ground_truth_geometry({**halfway, "in_depth": torch.zeros_like(halfway["in_depth"])}, backend="torch")
    assert empty_alpha.abs().max() < 1e-6 and empty.abs().max() < 1e-6  # depth 0 = invalid: no Gaussian


def test_procedural_nvs_without_a_model_scores_the_baselines_and_ceilings():
    boards = procedural_nvs(None, 28, num_scenes=1, frames=1)
    methods = {r["method"] for r in boards["nvs (oracle cameras)"].rows()}
    assert {"mean of the 2 neighbouring inputs", GT_GEOMETRY, GT_GEOMETRY_FILLED} <= methods
    assert not any(m.startswith("ours") for board in boards.values() for m in (r["method"] for r in board.rows()))
