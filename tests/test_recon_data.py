"""Reconstructor data: static samples are separate static scenes mixed in by the generator's mixture
machinery (issue 9 item 8), and camera token replacement rejects cameras that move over time (item 10)."""
from __future__ import annotations

import pytest
import torch

from fourd.data import MixtureDataset, generate_scene
from fourd.train.distributed import DistEnv
from recon.train_task import ReconTask, check_fixed_cameras
from tests.test_recon_train import _compose


def test_static_samples_are_separate_static_scenes_duplicated_over_time():
    """The dynamic stage's static share comes through fourd.data.MixtureDataset from separate static
    scenes (the paper's construction: views = frames of a camera moving through a frozen scene, each
    duplicated over time), not from a frame of the dynamic training scene with the same index."""
    cfg = _compose("stage=dynamic", "recon_data.num_frames=3", "recon_data.static_ratio=0.5")
    task = ReconTask(cfg, DistEnv(rank=0, world_size=1, local_rank=0))
    mixture = task.scenes.mixture(3)
    assert isinstance(mixture, MixtureDataset)
    kinds = set()
    for position in range(10):
        s = mixture[position]
        kinds.add(s["source"])
        if s["source"] != "static":
            assert s["kind"] == "dynamic"
            continue
        assert s["kind"] == "static" and s["frames"].shape == (6, 3, 3, 28, 28)
        assert torch.equal(s["frames"][:, :1].expand_as(s["frames"]), s["frames"])  # duplicated over time
        assert torch.equal(s["extrinsics"][:, :1].expand_as(s["extrinsics"]), s["extrinsics"])
        centres = -(s["extrinsics"][:, 0, :, :3].transpose(-1, -2) @ s["extrinsics"][:, 0, :, 3:])[..., 0]
        assert float((centres[1:] - centres[:-1]).norm(dim=-1).min()) > 1e-3  # every view a new camera position
        _, index, _ = mixture.locate(position)
        dynamic = task.scenes.sample(index, 3, False)
        assert (s["frames"][:, 0] - dynamic["frames"][:, 0]).abs().mean() > 0.02  # another scene
    assert kinds == {"static", "dynamic"}


def test_disk_static_samples_come_from_the_static_root(tmp_path):
    from fourd.data import write_synthetic_dataset

    write_synthetic_dataset(str(tmp_path / "dyn"), 1, seed=0, num_views=4, num_frames=2, height=28, width=28)
    write_synthetic_dataset(str(tmp_path / "static"), 1, seed=9, kinds=("static",), num_views=1, num_frames=4, height=28, width=28)
    common = ["recon_data=disk", f"recon_data.scenes={tmp_path / 'dyn'}", f"recon_data.eval_scenes={tmp_path / 'dyn'}",
              "recon_data.height=28", "recon_data.width=28", "recon_data.input_views=2", "recon_data.target_views=2",
              "recon_data.num_frames=2", "stage=dynamic"]
    with pytest.raises(ValueError, match="static_scenes"):
        ReconTask(_compose(*common), DistEnv())
    task = ReconTask(_compose(*common, f"recon_data.static_scenes={tmp_path / 'static'}", "recon_data.static_ratio=1.0"), DistEnv())
    s = task.scenes.mixture(2)[0]
    assert s["source"] == "static" and s["scene"].startswith("synthetic_static")
    assert torch.equal(s["frames"][:, 1], s["frames"][:, 0]) and s["depth"].shape == (4, 2, 28, 28)


def _moving_camera_sample():
    s = generate_scene(1, num_views=3, num_frames=3, height=28, width=28, kind="static")  # cameras sweep over time
    return {"frames": s.frames, "depth": s.depth, "extrinsics": s.extrinsics, "intrinsics": s.intrinsics, "scene": s.name, "kind": s.kind}


def test_camera_token_replacement_rejects_cameras_that_move_over_time():
    sample = _moving_camera_sample()
    with pytest.raises(ValueError, match="cameras move over time"):
        check_fixed_cameras(sample, allow_moving=False)
    with pytest.warns(UserWarning, match="cameras move over time"):
        check_fixed_cameras(sample, allow_moving=True)
    fixed = generate_scene(1, num_views=3, num_frames=3, height=28, width=28, kind="dynamic")
    check_fixed_cameras({"extrinsics": fixed.extrinsics}, allow_moving=False)

    task = ReconTask(_compose("stage=dynamic", "recon_data.num_frames=3", "recon_data.input_views=2", "recon_data.target_views=1"), DistEnv())
    task.scenes.sample = lambda *args, **kwargs: sample
    with pytest.raises(ValueError, match="camera_token_replacement"):
        next(iter(task.eval_batches(torch.device("cpu"))))
    ablation = ReconTask(_compose("stage=dynamic", "recon_data.num_frames=3", "recon_data.input_views=2", "recon_data.target_views=1",
                                  "recon_model.camera_token_replacement=false"), DistEnv())
    ablation.scenes.sample = lambda *args, **kwargs: sample
    assert next(iter(ablation.eval_batches(torch.device("cpu"))))["inputs"].shape == (1, 2, 3, 3, 28, 28)


@pytest.mark.parametrize("stage", ["static", "dynamic"])
def test_each_stage_builds_its_measured_centre_detach_choice(stage):
    """geometry.detach_depth (per stage) reaches the Gaussian head and the exported config."""
    import json

    cfg = _compose(f"stage={stage}", "loss.lpips_weight=0")
    task = ReconTask(cfg, DistEnv())
    model = task.build_model()
    want = bool(cfg.geometry.detach_depth[stage])
    assert model.gaussian_head.cfg.detach_depth == want
    assert json.loads(task.export_metadata()["recon_config"])["gaussian"]["detach_depth"] == want
    flipped = ReconTask(_compose(f"stage={stage}", "loss.lpips_weight=0", f"geometry.detach_depth.{stage}={not want}"), DistEnv()).build_model()
    assert flipped.gaussian_head.cfg.detach_depth == (not want)
