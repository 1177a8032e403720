"""Each evaluation dataset reader on a tiny fake copy of its public layout, built here."""
from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from eval.protocols import datasets
from fourd.data import generate_scene, write_scene
from fourd.data.synthetic import look_at


def _cameras(n: int) -> np.ndarray:
    """OpenCV camera-from-world [n, 4, 4] of cameras on an arc looking at the origin."""
    angles = torch.linspace(-0.5, 0.5, n)
    eye = torch.stack([4 * torch.sin(angles), -4 * torch.cos(angles), 1.0 + 0 * angles], -1)
    w2c = np.tile(np.eye(4), (n, 1, 1))
    w2c[:, :3] = look_at(eye, torch.zeros(n, 3)).double().numpy()
    return w2c


def _llff_rows(w2c: np.ndarray, h: int, w: int, focal: float) -> np.ndarray:
    """LLFF poses_bounds rows written independently of the reader: c2w columns (down, right, back)."""
    c2w = np.linalg.inv(w2c)
    right, down, forward, centre = c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3]
    hwf = np.tile([h, w, focal], (len(w2c), 1))
    m = np.stack([down, right, -forward, centre, hwf], axis=-1)  # [n, 3, 5]
    return np.concatenate([m.reshape(len(w2c), 15), np.tile([0.5, 10.0], (len(w2c), 1))], axis=1)


def _solid(value: int, h: int = 16, w: int = 24) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_llff_layout_cameras_become_opencv_camera_from_world(tmp_path):
    scene = tmp_path / "nerf_llff_data" / "fern"
    (scene / "images").mkdir(parents=True)
    w2c = _cameras(3)
    for i in range(3):
        iio.imwrite(scene / "images" / f"IMG_{i:04d}.png", _solid(60 * i))
    np.save(scene / "poses_bounds.npy", _llff_rows(w2c, 16, 24, 20.0))
    (url,) = datasets.list_scene_dirs(str(tmp_path / "nerf_llff_data"), "poses_bounds.npy")
    clip = datasets.read_llff(url, (14, 28))
    assert clip.frames.shape == (3, 1, 3, 14, 28)
    torch.testing.assert_close(clip.extrinsics[:, 0].double(), torch.from_numpy(w2c[:, :3]), atol=1e-5, rtol=0)
    K = clip.intrinsics[0, 0]
    torch.testing.assert_close(K, torch.tensor([[20 * 28 / 24, 0, 14.0], [0, 20 * 14 / 16, 7.0], [0, 0, 1]]))
    assert clip.frames[2].mean().item() == pytest.approx(120 / 255, abs=1e-3)


def test_tanks_temples_nerfpp_layout_merges_splits_in_name_order(tmp_path):
    scene = tmp_path / "tat_intermediate_M60"
    w2c = _cameras(3)
    K = np.array([[30.0, 0, 12, 0], [0, 30, 8, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    for i, split in enumerate(["train", "test", "train"]):
        for sub in ("rgb", "pose", "intrinsics"):
            (scene / split / sub).mkdir(parents=True, exist_ok=True)
        iio.imwrite(scene / split / "rgb" / f"{i:06d}.png", _solid(50 * i))
        np.savetxt(scene / split / "pose" / f"{i:06d}.txt", np.linalg.inv(w2c[i]).reshape(1, 16))
        np.savetxt(scene / split / "intrinsics" / f"{i:06d}.txt", K.reshape(1, 16))
    clip = datasets.read_tanks_temples(datasets.list_scene_dirs(str(tmp_path), "test")[0], (16, 48))
    assert clip.splits == ["train", "test", "train"]
    torch.testing.assert_close(clip.extrinsics[:, 0].double(), torch.from_numpy(w2c[:, :3]), atol=1e-5, rtol=0)
    torch.testing.assert_close(clip.intrinsics[1, 0, 0], torch.tensor([60.0, 0, 24]))
    assert clip.frames[1].mean().item() == pytest.approx(50 / 255, abs=1e-3)


def test_neural3d_layout_reads_strided_frames_of_every_camera(tmp_path):
    scene = tmp_path / "n3dv" / "coffee_martini"
    scene.mkdir(parents=True)
    for c in range(3):
        video = np.stack([_solid(40 * f + 10 * c, 32, 32) for f in range(5)])
        iio.imwrite(scene / f"cam{c:02d}.mp4", video, extension=".mp4", plugin="FFMPEG", fps=10, macro_block_size=16)
    np.save(scene / "poses_bounds.npy", _llff_rows(_cameras(3), 32, 32, 25.0))
    (url,) = datasets.list_scene_dirs(str(tmp_path / "n3dv"), "poses_bounds.npy")
    clip = datasets.read_neural3d(url, (28, 28), num_frames=2, stride=2, start=1)
    assert clip.frames.shape == (3, 2, 3, 28, 28) and clip.extrinsics.shape == (3, 2, 3, 4)
    means = clip.frames.mean(dim=(2, 3, 4)) * 255  # [V, T]
    expected = torch.tensor([[40.0 * f + 10 * c for f in (1, 3)] for c in range(3)])
    torch.testing.assert_close(means, expected, atol=4.0, rtol=0)  # H.264 is lossy


def test_nvidia_dynamic_layout_twelve_cameras(tmp_path):
    dense = tmp_path / "Balloon1" / "dense"
    for f in range(2):
        (dense / "mv_images" / f"{f:05d}").mkdir(parents=True)
        for c in range(1, 13):
            iio.imwrite(dense / "mv_images" / f"{f:05d}" / f"cam{c:02d}.jpg", _solid(10 * c + 100 * f), quality=100)
    w2c = _cameras(24)
    np.save(dense / "poses_bounds.npy", _llff_rows(w2c, 16, 24, 20.0))
    (url,) = datasets.list_scene_dirs(str(tmp_path), "dense")
    clip = datasets.read_nvidia_dynamic(url, (16, 16), num_frames=2)
    assert clip.frames.shape == (12, 2, 3, 16, 16)
    torch.testing.assert_close(clip.extrinsics[:, 0].double(), torch.from_numpy(w2c[:12, :3]), atol=1e-5, rtol=0)
    assert clip.frames[4, 1].mean().item() * 255 == pytest.approx(150, abs=2)


def test_scene_format_renders_for_the_objaverse_protocol(tmp_path):
    scene = generate_scene(5, num_views=3, num_frames=5, height=16, width=16)
    write_scene(scene, str(tmp_path / "objaverse" / scene.name))
    (url,) = datasets.list_scene_dirs(str(tmp_path / "objaverse"), "scene.json")
    clip = datasets.read_scene_format(url, (32, 32), num_frames=5, views=2)
    assert clip.frames.shape == (2, 5, 3, 32, 32) and clip.depth.shape == (2, 5, 32, 32)
    torch.testing.assert_close(clip.intrinsics[0, 0, 0, 0], scene.intrinsics[0, 0, 0, 0] * 2)
    torch.testing.assert_close(clip.depth[1, 2, ::2, ::2], scene.depth[1, 2], atol=1e-3, rtol=1e-3)  # nearest-neighbour upsampling keeps values


def test_missing_dataset_root_is_a_clear_error(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match="benchmark.root"):
        datasets.list_scene_dirs(str(tmp_path / "nowhere"), "poses_bounds.npy")
    with pytest.raises(ValueError, match="N x 17"):
        datasets.llff_to_opencv(np.zeros((3, 15)))
