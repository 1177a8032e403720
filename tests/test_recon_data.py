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


def test_procedural_source_serves_the_chain_grid_with_opencv_cameras():
    """recon_data=procedural: inputs and targets are the chain's grid and halfway views of the same
    seed (eval/protocols/chain.py); cameras OpenCV camera-from-world (the look-at point projects to
    the image centre, z forward), intrinsics in pixels, first camera identity after normalisation,
    fixed over time; held-out seeds (>= 1_000_000) are disjoint from training seeds."""
    from eval.protocols.chain import chain_scene
    from fourd.data.procedural import HELD_OUT_SEED_START, scene_seed
    from recon.train_task import collate, normalize_ground_truth

    cfg = _compose("recon_data=procedural", "recon_data.height=28", "recon_data.width=28", "stage=dynamic", "recon_data.num_scenes=5")
    task = ReconTask(cfg, DistEnv())
    s = task.scenes.sample(2, 2, False)
    seed = scene_seed(2, "train", 0, 5)
    assert s["kind"] == "dynamic" and s["scene"] == f"procedural_dynamic_{seed:07d}" and s["frames"].shape == (5, 2, 3, 28, 28)
    chain = chain_scene(seed, 3, 2, 28, 28, 90.0)
    batch = collate([s], cfg.recon_data.input_views, torch.device("cpu"))
    assert torch.equal(batch["inputs"][0], chain["grid"]) and torch.equal(batch["targets"][0], chain["targets"])
    check_fixed_cameras(s, allow_moving=False)
    E, K = s["extrinsics"][:, 0], s["intrinsics"][:, 0]
    assert torch.allclose(E[:, :, :3] @ E[:, :, :3].transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-5)
    look = E[:, :, :3] @ torch.tensor([0.0, 0.0, 0.45]) + E[:, :, 3]  # procedural cameras look at (0, 0, 0.45)
    assert bool((look[:, 2] > 0).all())
    assert torch.allclose((K @ look[..., None])[:, :2, 0] / look[:, 2:], torch.tensor([14.0, 14.0]).expand(5, 2), atol=1e-3)
    assert float(K[0, 0, 0]) > 14 and torch.equal(K[:, :2, 2], torch.tensor([14.0, 14.0]).expand(5, 2))
    gt = normalize_ground_truth(batch)
    assert torch.allclose(gt["in_ext"][0, 0], torch.eye(3, 4).expand(2, 3, 4), atol=1e-5)
    held = [task.scenes.sample(i, 2, static, held_out=True)["scene"] for i in range(2) for static in (False, True)]
    assert all(int(name[-7:]) >= HELD_OUT_SEED_START for name in held)
    train = [task.scenes.sample(i, 2, static)["scene"] for i in range(7) for static in (False, True)]
    assert all(int(name[-7:]) < 5 for name in train) and {n.split("_")[1] for n in train} == {"dynamic", "static"}


@pytest.mark.parametrize("override, match", [("recon_data.num_scenes=999999", "seed \\+ num_scenes"),
                                             ("recon_data.arc_degrees=0", "arc_degrees"),
                                             ("recon_data.source=grid", "unknown recon_data.source")])
def test_procedural_source_config_errors_name_the_key(override, match):
    cfg = _compose("recon_data=procedural", "recon_data.seed=2", override)
    with pytest.raises(ValueError, match=match):
        ReconTask(cfg, DistEnv())
