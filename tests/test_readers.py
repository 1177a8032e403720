"""Readers of the paper's static training sets (issue 18 item 5): RealEstate10K, DL3DV (nerfstudio),
COLMAP (MVImgNet), and the converter's handling of bad input.

Each test writes a tiny fake layout (tests/readers_fakes.py: cameras around known 3D points, a blob
drawn where the dataset's own projection puts each point), converts it and finds the blobs where
the converted cameras project the points; then reads the result with the existing sources.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fourd.data import StaticSceneSource, open_scene, read_scene
from fourd.data.readers import ReaderError, convert
from fourd.train.distributed import DistEnv
from tests import readers_fakes as fakes

REPO = Path(__file__).resolve().parents[1]


def test_realestate10k_cameras_reproject_broken_items_are_skipped_and_reruns_resume(tmp_path):
    rng = np.random.default_rng(3)
    root, out = tmp_path / "re10k", tmp_path / "out"
    root.mkdir()
    fakes.realestate10k(root, "seqA", rng, num_frames=5, missing=(1,), bad_lines=(3,), caption="a living room")
    fakes.realestate10k(root, "seqB", rng, num_frames=3)
    (root / "seqC.txt").write_text("https://www.youtube.com/watch?v=gone\n1000 0.9 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 4\n")
    report = convert("realestate10k", str(root), str(out), height=40, width=40)  # resize to cover + centre crop, jpg
    assert report.converted == ["seqA", "seqB"] and list(report.skipped) == ["seqC"] and "seqC" in report.skipped["seqC"]
    assert report.frames_dropped == 2  # seqA: one missing frame, one unreadable camera line
    assert not (out / "seqC").exists()  # a skipped item leaves nothing behind
    scene = fakes.check_blobs(str(out / "seqA"))["scene"]
    meta = open_scene(str(out / "seqA")).meta
    assert (meta.kind, meta.num_views, meta.num_frames, meta.height, meta.width, meta.rgb_format) == ("static", 1, 3, 40, 40, "jpg")
    assert scene.caption == "a living room" and meta.fps == pytest.approx(5.0)  # frames 0, 2, 4 of a 10 fps sequence kept
    fakes.check_blobs(str(out / "seqB"))
    assert open_scene(str(out / "seqB")).meta.fps == pytest.approx(10.0)
    # Restartable: complete scenes are kept, a missing one is redone.
    os.remove(out / "seqB" / "scene.json")
    again = convert("realestate10k", str(root), str(out), height=40, width=40)
    assert again.existing == ["seqA"] and again.converted == ["seqB"]
    # The generator's static source reads it (trajectory frames become views, duplicated over time).
    sample = StaticSceneSource(str(out), num_views=2, num_frames=3, size=(32, 32))[0]
    assert sample["frames"].shape == (2, 3, 3, 32, 32) and sample["has_cameras"] and sample["drop_freeze_time_frame_cond"]


def test_realestate10k_pixelsplat_chunks(tmp_path):
    """pixelSplat's preprocessed RealEstate10K (index.json + .torch chunks of JPEG bytes and 18-number camera rows)."""
    rng = np.random.default_rng(4)
    text_root = tmp_path / "text"
    text_root.mkdir()
    for name in ("k0", "k1"):
        fakes.realestate10k(text_root, name, rng, num_frames=3)
    fakes.realestate10k_chunk(text_root, tmp_path / "re10k" / "train" / "000000.torch")
    out = tmp_path / "out"
    report = convert("realestate10k", str(tmp_path / "re10k" / "train"), str(out), rgb_format="png")
    assert report.converted == ["k0", "k1"] and not report.skipped
    for name in ("k0", "k1"):
        scene = fakes.check_blobs(str(out / name))["scene"]
        assert scene.frames.shape == (1, 3, 3, 48, 64) and scene.fps == pytest.approx(10.0)
    shard = convert("realestate10k", str(tmp_path / "re10k" / "train"), str(tmp_path / "shard1"), shard=1, num_shards=2)
    assert shard.converted == ["k1"]  # one process per shard: every num_shards-th item
    examples = torch.load(tmp_path / "re10k" / "train" / "000000.torch", weights_only=True)
    del examples[0]["timestamps"]  # a malformed example is skipped, the others still convert
    torch.save(examples, tmp_path / "re10k" / "train" / "000000.torch")
    report = convert("realestate10k", str(tmp_path / "re10k" / "train"), str(tmp_path / "again"))
    assert report.converted == ["k1"] and report.skipped["k0"].startswith("KeyError")


def test_dl3dv_transforms_json_opengl_cameras_downscaled_images_and_distortion(tmp_path):
    """nerfstudio's camera-to-world in OpenGL axes, intrinsics of the full-resolution images (w, h)
    while only images_4/ exists (DL3DV's 960P release), OPENCV distortion, one bad matrix."""
    rng = np.random.default_rng(5)
    scene = tmp_path / "dl3dv" / "1K" / "0a1b2c"
    H, W = 48, 64
    full = dict(w=4 * W, h=4 * H, fl_x=4 * 60.0, fl_y=4 * 61.0, cx=4 * 32.5, cy=4 * 23.5, k1=-0.5, k2=0.1, p1=0.05, p2=-0.04)
    frames = []
    for i in range(4):
        R, C = fakes.gl_camera(rng)
        fx, fy, cx, cy = (full[k] / 4 for k in ("fl_x", "fl_y", "cx", "cy"))
        pix = fakes.distort(fakes.project_gl(R, C, fx, fy, cx, cy), fx, fy, cx, cy, full["k1"], full["k2"], full["p1"], full["p2"])
        fakes.grey_png(scene / "images_4" / f"frame_{i + 1:05d}.png", fakes.blobs(H, W, pix))
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = R, C
        frames.append({"file_path": f"images/frame_{i + 1:05d}.png", "transform_matrix": c2w.tolist() if i != 2 else "bad"})
    (scene / "transforms.json").write_text(json.dumps({"camera_model": "OPENCV", **full, "frames": frames[::-1]}))
    out = tmp_path / "out"
    report = convert("dl3dv", str(tmp_path / "dl3dv"), str(out), rgb_format="png", image_dir="images_4")
    assert report.converted == ["1K-0a1b2c"] and report.frames_dropped == 1
    scene_out = fakes.check_blobs(str(out / "1K-0a1b2c"))["scene"]
    assert scene_out.frames.shape == (1, 3, 3, H, W)
    sample = StaticSceneSource(str(out), num_views=3, num_frames=2, size=(28, 28))[0]
    assert sample["frames"].shape == (3, 2, 3, 28, 28) and sample["has_cameras"]


def test_colmap_text_and_binary_models_with_sparse_depth_feed_the_reconstructor(tmp_path):
    """MVImgNet-style <category>/<object>/sparse/0 in .txt and .bin: qvec (w, x, y, z) world-to-camera,
    PINHOLE and OPENCV cameras; every frame gets the sparse depth of the points it observes; the
    reconstructor's disk data (static share, configs/recon_data/disk.yaml) trains on the result."""
    rng = np.random.default_rng(11)
    root = tmp_path / "mvimgnet"
    depths = {"chair-obj1": fakes.colmap_scene(root / "chair" / "obj1", rng, binary=False),
              "chair-obj2": fakes.colmap_scene(root / "chair" / "obj2", rng, binary=True)}
    out = tmp_path / "out"
    report = convert("colmap", str(root), str(out), height=42, width=42, rgb_format="png")
    assert report.converted == ["chair-obj1", "chair-obj2"] and not report.skipped
    for name, z_by_image in depths.items():
        scene = fakes.check_blobs(str(out / name))["scene"]
        assert scene.depth is not None and scene.frames.shape[:2] == (1, 4)
        for t, image in enumerate(sorted(z_by_image)):  # frames follow image names
            ext, K = scene.extrinsics[0, t].double().numpy(), scene.intrinsics[0, t].double().numpy()
            cam = fakes.POINTS @ ext[:, :3].T + ext[:, 3]
            np.testing.assert_allclose(cam[:, 2], z_by_image[image], rtol=1e-5)
            uv = cam @ K.T
            u, v = (uv[:, 0] / uv[:, 2]).astype(int), (uv[:, 1] / uv[:, 2]).astype(int)
            inside = (u >= 0) & (u < 42) & (v >= 0) & (v < 42)
            np.testing.assert_allclose(scene.depth[0, t].numpy()[v[inside], u[inside]], cam[inside, 2], rtol=1e-5)
            assert int((scene.depth[0, t] > 0).sum()) == int(inside.sum())
    from recon.train_task import ReconTask, collate, normalize_ground_truth
    from tests.test_recon_train import _compose

    task = ReconTask(_compose("recon_data=disk", f"recon_data.scenes={out}", f"recon_data.eval_scenes={out}",
                              f"recon_data.static_scenes={out}", "recon_data.static_ratio=1.0", "recon_data.height=28",
                              "recon_data.width=28", "recon_data.input_views=2", "recon_data.target_views=2",
                              "recon_data.num_frames=2", "stage=dynamic"), DistEnv())
    sample = task.scenes.mixture(2)[0]
    assert sample["source"] == "static" and sample["depth"].shape == (4, 2, 28, 28)
    gt = normalize_ground_truth(collate([sample], 2, torch.device("cpu")))  # needs valid depth in the input views
    assert torch.isfinite(gt["scale"]).all() and float(gt["scale"][0]) > 0


def test_colmap_unsupported_camera_model_skips_the_scene(tmp_path):
    rng = np.random.default_rng(2)
    fakes.colmap_scene(tmp_path / "cap" / "ok", rng, binary=False, num_images=2)
    bad = tmp_path / "cap" / "fisheye"
    fakes.colmap_scene(bad, rng, binary=False, num_images=2)
    text = (bad / "sparse" / "0" / "cameras.txt").read_text().replace("PINHOLE", "OPENCV_FISHEYE", 1)
    (bad / "sparse" / "0" / "cameras.txt").write_text(text)
    report = convert("colmap", str(tmp_path / "cap"), str(tmp_path / "out"))
    assert report.converted == ["ok"] and "OPENCV_FISHEYE" in report.skipped["fisheye"]


def test_bad_roots_and_options_fail_at_start_with_one_line(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ReaderError, match="nowhere") as err:
        convert("colmap", str(missing), str(tmp_path / "out"))
    assert "\n" not in str(err.value) and "sparse" in str(err.value)  # names what was expected
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReaderError, match="no scenes under .*empty"):
        convert("kubric", str(tmp_path / "empty"), str(tmp_path / "out"))
    re10k = tmp_path / "re10k"
    re10k.mkdir()
    fakes.realestate10k(re10k, "seq", np.random.default_rng(0), num_frames=2)
    with pytest.raises(ReaderError, match="transforms.json"):  # a reader pointed at another dataset's layout
        convert("dl3dv", str(re10k), str(tmp_path / "out"))
    with pytest.raises(ReaderError, match="unknown option.*image_dir.*frame_stride"):
        convert("realestate10k", str(re10k), str(tmp_path / "out"), image_dir="x")
    with pytest.raises(ReaderError, match="unknown dataset 'co3d'"):
        convert("co3d", str(re10k), str(tmp_path / "out"))
    with pytest.raises(ReaderError, match="frames folder"):
        convert("realestate10k", str(re10k), str(tmp_path / "out"), frames=str(tmp_path / "no_frames"))


def test_convert_data_command_line(tmp_path):
    """The documented command: one summary line and a report file; then (same process, a Hydra
    multirun) a wrong root exits 1 with one line."""
    root = tmp_path / "re10k"
    root.mkdir()
    fakes.realestate10k(root, "seq", np.random.default_rng(1), num_frames=3)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "launch" / "convert_data.py"), "-m", f"root={root},{tmp_path / 'missing'}",
           "dataset=realestate10k", f"out={tmp_path / 'out'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "+options.frame_stride=2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert "realestate10k: 1 scenes converted" in done.stdout, done.stdout + done.stderr
    assert json.loads((tmp_path / "sweep" / "0" / "convert_report.json").read_text())["converted"] == ["seq"]
    assert read_scene(str(tmp_path / "out" / "seq")).frames.shape[1] == 2  # frame_stride=2 of 3 frames
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("convert_data: error:") and "missing" in done.stderr
