"""Readers of the paper's dynamic / multi-view training sets (issue 18 item 5): Kubric renders,
Objaverse-style render folders, and a folder of captioned videos for the homography source.

Same check as tests/test_readers.py: blobs drawn where each dataset's own projection puts known 3D
points must sit where the converted cameras project them; then the existing sources read the result.
"""
from __future__ import annotations

import shutil

import imageio.v3 as iio
import numpy as np
import torch

from fourd.data import HomographyVideoSource, MultiViewSource, open_scene
from fourd.data.readers import convert
from fourd.train.distributed import DistEnv
from tests import readers_fakes as fakes


def test_kubric_multiview_and_single_view_renders_with_depth(tmp_path):
    """Kubric's (w, x, y, z) quaternions of Blender camera axes, focal/sensor in mm and depth as
    distance to the camera centre (z_to_depth) -> OpenCV cameras and z-depth; moving cameras per frame."""
    rng = np.random.default_rng(7)
    root = tmp_path / "kubric"
    fakes.kubric_view(root / "scene_mv" / "cam_a", rng, num_frames=3)
    fakes.kubric_view(root / "scene_mv" / "cam_b", rng, num_frames=3)
    fakes.kubric_view(root / "movi_single", rng, num_frames=2)  # MOVi: one camera, files at the scene's top level
    fakes.kubric_view(root / "scene_broken" / "cam_a", rng, num_frames=3, missing=(1,))
    out = tmp_path / "out"
    report = convert("kubric", str(root), str(out), height=40, width=40)
    assert report.converted == ["movi_single", "scene_mv"] and "rgba_00001.png" in report.skipped["scene_broken"]
    scene = fakes.check_blobs(str(out / "scene_mv"))["scene"]
    assert scene.frames.shape == (2, 3, 3, 40, 40) and scene.kind == "dynamic" and scene.fps == 12
    torch.testing.assert_close(scene.depth, torch.full_like(scene.depth, 3.0))  # the plane z = 3 everywhere
    assert not torch.allclose(scene.extrinsics[:, 0], scene.extrinsics[:, 1])  # per-frame (moving) cameras kept
    assert fakes.check_blobs(str(out / "movi_single"))["scene"].frames.shape[:2] == (1, 2)
    sample = MultiViewSource([str(out / "scene_mv")], num_views=2, num_frames=2, size=(28, 28), with_depth=True)[0]
    assert sample["has_cameras"] and sample["depth"].shape == (2, 2, 28, 28)
    # The reconstructor's dynamic disk data (stage 2 trains on dynamic Kubric) reads it and normalises by its depth.
    from recon.train_task import ReconTask, collate, normalize_ground_truth
    from tests.test_recon_train import _compose

    shutil.copytree(out / "scene_mv", tmp_path / "dyn" / "scene_mv")  # a root of multi-view scenes only
    task = ReconTask(_compose("recon_data=disk", f"recon_data.scenes={tmp_path / 'dyn'}", f"recon_data.eval_scenes={tmp_path / 'dyn'}",
                              "recon_data.static_ratio=0", "recon_data.height=28", "recon_data.width=28", "recon_data.input_views=1",
                              "recon_data.target_views=1", "recon_data.num_frames=2", "stage=dynamic"), DistEnv())
    gt = normalize_ground_truth(collate([task.scenes.sample(0, 2, False)], 1, torch.device("cpu")))
    assert float(gt["scale"][0]) > 0


def test_objaverse_renders_both_conventions_white_background_and_captions_file(tmp_path):
    rng = np.random.default_rng(13)
    root = tmp_path / "objaverse"
    fakes.objaverse_object(root / "uid_gl", rng, "opengl", moving_view=1)
    fakes.objaverse_object(root / "uid_cv", rng, "opencv")
    captions = tmp_path / "Cap3D_automated_Objaverse.csv"  # Cap3D's layout: uid,caption rows, no header
    captions.write_text('uid_gl,"a red chair, spinning"\nuid_cv,a blue mug\n')
    out = tmp_path / "out"
    report = convert("objaverse", str(root), str(out), captions=str(captions))
    assert report.converted == ["uid_cv", "uid_gl"] and not report.skipped
    for name, caption in (("uid_gl", "a red chair, spinning"), ("uid_cv", "a blue mug")):
        scene = fakes.check_blobs(str(out / name), dark=True)["scene"]
        assert scene.frames.shape == (3, 2, 3, 48, 64) and scene.caption == caption and scene.fps == 8
        assert float(scene.frames[:, :, :, 0, 0].min()) == 1.0  # transparent background composited over white
    sample = MultiViewSource(str(out), num_views=3, num_frames=2, size=(32, 32))[0]
    assert sample["frames"].shape == (3, 2, 3, 32, 32) and sample["has_cameras"]


def test_folder_of_videos_with_captions_reads_into_the_homography_source(tmp_path):
    """No conversion: the homography source reads a folder of videos; <video>.txt is the caption."""
    root = tmp_path / "videos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in ("clip_a", "clip_b"):
        frames = (rng.random((9, 32, 48, 3)) * 255).astype(np.uint8)
        iio.imwrite(root / f"{name}.mp4", frames, extension=".mp4", plugin="FFMPEG", fps=8, macro_block_size=1)
    (root / "clip_a.txt").write_text("a dog runs on the beach\n")
    (root / "index.json").write_text("{}")  # other files in the folder are not scenes
    source = HomographyVideoSource(str(root), num_views=3, num_frames=5, size=(32, 32))
    assert len(source) == 2
    sample = source[0]
    assert sample["frames"].shape == (3, 5, 3, 32, 32) and sample["kind"] == "homography" and sample["scene"] == "clip_a"
    assert open_scene(str(root / "clip_a.mp4")).meta.caption == "a dog runs on the beach"
    assert open_scene(str(root / "clip_b.mp4")).meta.caption is None
