"""launch/train_recon.py end to end (launcher=plain): hard stop after a checkpoint, resume to the
same losses as an uninterrupted run, exported weights that load with load_reconstructor (only the
Gaussian head moved in the static stage), and the scene export (PLY, cameras.json, mp4s)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from plyfile import PlyData

from fourd.train.observe import losses_by_step

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SCRIPT = str(ROOT / "launch" / "train_recon.py")
COMMON = [
    "launcher=plain", "train.steps=4", "train.checkpoint_every=2", "train.progress=false", "train.log_every=1",
    "optim.warmup_steps=1", "recon_data.num_scenes=4", "recon_data.num_frames=2", "recon_data.eval_scene_count=1",
    "loss.lpips_random_backbone=true", "scene_export.path_frames=5",
]


def _run(args, run_dir, expect_rc=0):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), RUN_DIR=str(run_dir))
    env.pop("RUN_STAMP", None)
    proc = subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect_rc, f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _reference_losses(tmp_path):
    """The same run uninterrupted, in process (compose API), no exports."""
    from hydra import compose, initialize_config_dir

    from fourd.train.distributed import DistEnv
    from fourd.train.engine import OptimConfig, build_engine
    from fourd.train.hydra_app import typed
    from fourd.train.loop import LoopConfig, train
    from recon.train_task import ReconTask

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train_recon", overrides=[*COMMON, "train.export=none", "train.checkpoint_every=0"])
    env = DistEnv()
    loop = typed(LoopConfig, cfg.train)
    optim = typed(OptimConfig, cfg.optim, total_steps=loop.steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(ReconTask(cfg, env), lambda m: build_engine("plain", m, optim, device=env.device, dtype=torch.float32, micro_batch=1),
                       loop, str(tmp_path / "ref"), env)
    finally:
        torch.set_num_threads(threads)
    return result.losses


def test_train_stop_resume_export_and_scene_export(tmp_path):
    run = tmp_path / "run"
    _run([*COMMON, "debug.stop_after_step=2"], run, expect_rc=17)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert not (run / "result.json").exists()
    _run(COMMON, run)  # resume=auto continues from step 2
    assert json.loads((run / "result.json").read_text())["step"] == 4
    got, want = losses_by_step(run), _reference_losses(tmp_path)
    assert sorted(got) == [1, 2, 3, 4]
    assert [got[s] for s in (1, 2, 3, 4)] == pytest.approx([want[s] for s in (1, 2, 3, 4)], rel=1e-4)

    # exported weights: load with load_reconstructor; static stage -> only the Gaussian head changed
    from safetensors import safe_open

    from recon import load_reconstructor

    export = run / "export" / "model.safetensors"
    with safe_open(str(export), "pt") as f:
        config = json.loads(f.metadata()["recon_config"])
    trained = dict(load_reconstructor(config, weights=str(export)).named_parameters())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        init = dict(load_reconstructor(config).named_parameters())
    changed = {n for n, p in init.items() if not torch.equal(p, trained[n])}
    assert changed and all(n.startswith("gaussian_head.") for n in changed)

    # scene export: PLY per timestep with the standard 3DGS properties, cameras, videos
    out = run / "scene_export"
    for t in range(2):
        ply = PlyData.read(str(out / f"gaussians_t{t:04d}.ply"))
        names = set(ply["vertex"].data.dtype.names)
        assert {"x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3"} <= names
        assert len(ply["vertex"].data) == 4 * 28 * 28  # one Gaussian per input pixel
    cams = json.loads((out / "cameras.json").read_text())
    assert cams["convention"] == "opencv" and len(cams["cameras"]) == 4 and (cams["width"], cams["height"]) == (28, 28)
    assert torch.allclose(torch.tensor(cams["cameras"][0]["extrinsic"]), torch.eye(3, 4), atol=1e-5)  # reference camera
    assert iio.imread(out / "novel_views.mp4", plugin="FFMPEG").shape == (5, 28, 28, 3)
    assert iio.imread(out / "novel_times.mp4", plugin="FFMPEG").shape == (2, 28, 28, 3)


def test_export_mode_writes_the_scene_from_given_weights(tmp_path):
    from fourd.weights import write_safetensors
    from recon import load_reconstructor

    weights = tmp_path / "w.safetensors"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        write_safetensors(str(weights), load_reconstructor("tiny-4d").state_dict())
    out = tmp_path / "scene"
    _run(["mode=export", f"recon_model.weights={weights}", f"scene_export.out={out}", "recon_data.num_frames=3",
          "scene_export.path_frames=4", "recon_data.input_views=2"], tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == [
        "cameras.json", "gaussians_t0000.ply", "gaussians_t0001.ply", "gaussians_t0002.ply", "novel_times.mp4", "novel_views.mp4"]
