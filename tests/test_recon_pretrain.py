"""The tiny VGGT base pretraining (recon/pretrain_task.py, recon/vggt_losses.py): VGGT's losses
against hand computations, the task's batches and loss, and the exported base as the starting point
of the 4D reconstructor."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from fourd.train.hydra_app import compose_training
from fourd.data.loader import SampleKey
from fourd.train.distributed import DistEnv
from fourd.weights import StateDictMismatchError, read_metadata, write_safetensors
from recon.model import load_reconstructor
from recon.pretrain_task import BaseTask
from recon.vggt_losses import (
    VGGTLossConfig,
    abs_rel_median_aligned,
    camera_loss,
    confidence_regression,
    gradient_loss,
    rotation_angle_deg,
    translation_angle_deg,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compose(*overrides: str):
    return compose_training("train_recon_base", ["train.progress=false", *overrides])


def test_camera_loss_weights_iterations_and_terms_like_vggt():
    target = torch.zeros(2, 9)
    first, last = torch.full((2, 9), 1.0), torch.full((2, 9), 2.0)
    out = camera_loss([first, last], target, VGGTLossConfig())
    # iteration weights 0.6 (first) and 1 (last), averaged over the 2 iterations
    per = (0.6 * 1.0 + 1.0 * 2.0) / 2
    assert all(math.isclose(float(out[k]), per, rel_tol=1e-6) for k in ("cam_t", "cam_r", "cam_fov"))
    assert math.isclose(float(out["camera"]), per * (1 + 1 + 0.5), rel_tol=1e-6)


def test_confidence_and_gradient_terms_match_closed_forms():
    err, conf = torch.tensor([[0.5, 2.0], [1.0, 0.0]]), torch.tensor([[2.0, 3.0], [1.5, 4.0]])
    valid = torch.tensor([[True, True], [True, False]])
    conf_term, plain = confidence_regression(err, conf, valid, alpha=0.2)
    want = sum(c * e - 0.2 * math.log(c) for e, c in ((0.5, 2.0), (2.0, 3.0), (1.0, 1.5))) / 3
    assert math.isclose(float(conf_term), want, rel_tol=1e-6) and math.isclose(float(plain), 3.5 / 3, rel_tol=1e-6)
    gt = torch.rand(1, 8, 8) + 1
    ones, valid = torch.ones(1, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool)
    assert float(gradient_loss(gt + 0.7, gt, ones, valid)) == pytest.approx(0.0, abs=1e-6)  # a constant offset has no gradient
    ramp = torch.arange(8.0)[None, None, :].expand(1, 8, 8)  # d/dx = 1 at stride 1, 2 at stride 2, 4 at stride 4
    assert float(gradient_loss(gt + ramp, gt, ones, valid)) == pytest.approx((1 + 2 + 4) / 3, rel=1e-5)


def test_camera_and_depth_error_metrics():
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    rz = torch.tensor([[c, -s, 0.0, 1.0], [s, c, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    eye = torch.cat([torch.eye(3), torch.tensor([[0.0], [1.0], [0.0]])], -1)
    assert float(rotation_angle_deg(rz, eye)) == pytest.approx(30.0, abs=1e-3)
    assert float(translation_angle_deg(rz[:, 3], eye[:, 3])) == pytest.approx(90.0, abs=1e-3)
    gt = torch.rand(2, 5, 6) + 1
    assert torch.allclose(abs_rel_median_aligned(gt * torch.tensor([3.0, 0.5])[:, None, None], gt), torch.zeros(2), atol=1e-6)


def test_base_task_batches_loss_and_export_start_the_4d_reconstructor(tmp_path):
    """Static multi-view sets from training seeds (held-out range refused), a finite loss with every
    term and gradients into every head, and an export that loads with load_reconstructor(weights=...)
    alone and as the backbone of tiny-4d (point-head keys dropped, new layers at init)."""
    cfg = _compose("base_data.views=3")
    task = BaseTask(cfg, DistEnv())
    model = task.build_model()
    data = task.data(2)
    batch = data.collate([data.dataset[SampleKey(i, 0)] for i in range(2)])
    assert batch["inputs"].shape == (2, 3, 1, 3, 28, 28) and batch["in_depth"].shape == (2, 3, 1, 28, 28)
    loss, stats = task.loss(model, batch, torch.Generator())
    loss.backward()
    assert torch.isfinite(loss)
    assert {"camera", "depth_conf", "depth_l1", "depth_grad", "point_conf", "point_l1", "rot_err_deg", "abs_rel"} <= set(stats)
    for head in ("camera_head", "depth_head", "point_head", "aggregator"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, head).parameters()), head
    with pytest.raises(ValueError, match="held-out range"):
        data.dataset[SampleKey(cfg.base_data.held_out_seed - cfg.base_data.seed, 0)]

    path = str(tmp_path / "base.safetensors")
    write_safetensors(path, model.state_dict(), metadata=task.export_metadata())
    again = load_reconstructor(weights=path)
    assert again.point_head is not None and again.track_head is None
    four_d = load_reconstructor({"preset": "tiny-4d"}, weights=path)
    assert four_d.load_report.dropped and all(k.startswith("point_head.") for k in four_d.load_report.dropped)
    torch.testing.assert_close(four_d.depth_head.state_dict(), model.depth_head.state_dict())


def test_camera_only_pretraining_trains_without_depth_and_point_heads(tmp_path):
    """Heads whose loss weight is 0 may be disabled: the loss is the camera term alone, gradients reach
    the camera head and the backbone, and a later run with every loss starts from that export (the
    depth and point heads reported missing). A disabled head that base_loss still weighs is refused."""
    off = ("recon_model.enable_depth=false", "recon_model.enable_point=false")
    cfg = _compose("base_data.views=3", *off, "base_loss.depth_weight=0", "base_loss.point_weight=0")
    task = BaseTask(cfg, DistEnv())
    model = task.build_model()
    assert model.depth_head is None and model.point_head is None
    data = task.data(2)
    batch = data.collate([data.dataset[SampleKey(i, 0)] for i in range(2)])
    loss, stats = task.loss(model, batch, torch.Generator())
    loss.backward()
    torch.testing.assert_close(loss, cfg.base_loss.camera_weight * torch.tensor(stats["camera"]))
    assert "abs_rel" not in stats and "depth_l1" not in stats
    for head in ("camera_head", "aggregator"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, head).parameters()), head
    path = str(tmp_path / "camera_only.safetensors")
    write_safetensors(path, model.state_dict(), metadata=task.export_metadata())
    with pytest.raises(StateDictMismatchError, match="depth_head"):
        BaseTask(_compose(f"recon_model.weights={path}"), DistEnv()).build_model()
    full = BaseTask(_compose(f"recon_model.weights={path}", "recon_model.init_heads=[depth_head,point_head]"), DistEnv()).build_model()
    assert full.load_report.missing and {k.split(".")[0] for k in full.load_report.missing} == {"depth_head", "point_head"}
    torch.testing.assert_close(full.camera_head.state_dict(), model.camera_head.state_dict())
    with pytest.raises(ValueError, match="depth_weight"):
        BaseTask(_compose(*off), DistEnv()).build_model()


def test_committed_base_checkpoint_loads_as_the_start_of_stage_1():
    path = os.path.join(ROOT, "checkpoints", "base", "vggt.safetensors")
    config = json.loads(read_metadata(path)["recon_config"])
    assert config["preset"] == "tiny"
    base = load_reconstructor(weights=path)
    stage1 = load_reconstructor({"preset": "tiny-4d"}, weights=path)
    torch.testing.assert_close(stage1.aggregator.frame_blocks.state_dict(), base.aggregator.frame_blocks.state_dict())
    assert stage1.load_report.missing and all(k.startswith(("gaussian_head.", "aggregator.frame_temporal", "aggregator.global_temporal"))
                                              for k in stage1.load_report.missing)


def test_committed_camera_only_base_reads_the_cameras_and_continues_with_every_loss():
    """checkpoints/base/vggt56_camera.safetensors (docs/base_models.md, "Fourth session"): a 56 x 56
    camera-only base whose cameras beat the mean training pose on held-out sets (not the shared pose of
    a collapsed base), and the start of a run with every loss (depth and point heads at their init)."""
    from recon.pretrain_task import baseline_metrics, evaluate_base

    path = os.path.join(ROOT, "checkpoints", "base", "vggt56_camera.safetensors")
    cfg = _compose("base_data.height=56", "base_data.width=56", "base_data.eval_scene_count=8", "+recon_model.img_size=56",
                   f"recon_model.weights={path}", "recon_model.init_heads=[depth_head,point_head]")
    model = BaseTask(cfg, DistEnv()).build_model()
    assert {k.split(".")[0] for k in model.load_report.missing} == {"depth_head", "point_head"}
    camera_only = load_reconstructor(weights=path)
    assert camera_only.depth_head is None and camera_only.cfg.img_size == 56
    ours, mean_pose = evaluate_base(model, cfg.base_data), baseline_metrics(cfg.base_data)["mean_pose"]
    assert ours["rot_err_deg"] < 0.75 * mean_pose["rot_err_deg"] and ours["view_spread_deg"] > 15, (ours, mean_pose)


def test_shuffled_view_order_permutes_the_arc_set():
    """base_data.view_order=shuffled: the same scene's views in a seeded permutation (the reference
    view 0 not always at the arc's end); an unknown order is refused by the task."""
    from recon.pretrain_task import base_scene

    firsts = []
    for seed in range(6):
        arc, shuffled = base_scene(seed, 4, 28, 28, (20.0, 120.0)), base_scene(seed, 4, 28, 28, (20.0, 120.0), "shuffled")
        order = [next(i for i in range(4) if torch.equal(arc["frames"][i], f)) for f in shuffled["frames"]]
        assert sorted(order) == [0, 1, 2, 3] and torch.equal(shuffled["extrinsics"], arc["extrinsics"][order])
        assert torch.equal(shuffled["depth"], arc["depth"][order])
        firsts.append(order[0])
    assert set(firsts) - {0, 3}
    with pytest.raises(ValueError, match="view_order"):
        BaseTask(_compose("base_data.view_order=random"), DistEnv())


def test_view_spread_is_the_mean_pairwise_angle_of_the_non_reference_views():
    from recon.pretrain_task import view_spread_deg

    def rz(deg: float) -> torch.Tensor:
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        return torch.tensor([[c, -s, 0.0, 0.0], [s, c, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])

    arc = torch.stack([rz(a) for a in (0.0, 10.0, 20.0, 40.0)])[None, :, None]  # [1, 4, 1, 3, 4]
    assert float(view_spread_deg(arc)[0]) == pytest.approx((10 + 30 + 20) / 3, abs=1e-3)
    collapsed = torch.stack([rz(a) for a in (0.0, 41.0, 41.0, 41.0)])[None, :, None]
    assert float(view_spread_deg(collapsed)[0]) == pytest.approx(0.0, abs=1e-2)


def test_cameras_from_an_exact_point_map_have_no_error_whatever_the_camera_head_says():
    """evaluate_base's points_* columns: an oracle whose point map and depth are the truth but whose
    camera head says identity scores the identity baseline on its cameras and ~0 on its point map's."""
    from recon.model.reconstructor import ReconstructionOutput
    from recon.pretrain_task import _collate, _shape, _targets, base_scene, baseline_metrics, evaluate_base

    data = _compose("base_data.eval_scene_count=3").base_data

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused, self.calls = torch.nn.Parameter(torch.zeros(1)), 0

        def forward(self, images):
            batch = _collate([base_scene(data.held_out_seed + self.calls, *_shape(data))], images.device)
            self.calls += 1
            gt = _targets(batch)
            identity = torch.eye(3, 4).expand_as(gt["in_ext"])
            return ReconstructionOutput(extrinsics=identity, intrinsics=batch["in_K"], depth=gt["depth"], world_points=gt["points"])

    m = evaluate_base(Oracle(), data)
    assert m["points_rot_err_deg"] < 0.05 and m["points_trans_err_deg"] < 0.05
    assert m["rot_err_deg"] == pytest.approx(baseline_metrics(data)["identity"]["rot_err_deg"], abs=1e-3)
