"""The on-disk scene format: round trips (memory://, local png and mp4), monocular inputs, errors, corrupt files."""
import io
import json
import uuid

import fsspec
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from fourd.data import MultiViewSource, SceneFormatError, generate_scene, open_scene, read_scene, write_scene
from fourd.data.format import SceneMeta


@pytest.fixture(scope="module")
def scene():
    return generate_scene(1, num_views=3, num_frames=5, height=24, width=32)


def _mem() -> str:
    return f"memory://test_data_format/{uuid.uuid4().hex}"


def test_png_round_trip_through_memory_fs(scene):
    url = f"{_mem()}/my_scene"
    write_scene(scene, url)
    back = read_scene(url)
    assert back.name == scene.name and back.kind == "dynamic" and back.fps == scene.fps
    assert (back.frames - scene.frames).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(back.depth, scene.depth)
    assert torch.equal(back.masks, scene.masks)
    assert torch.allclose(back.extrinsics, scene.extrinsics) and torch.allclose(back.intrinsics, scene.intrinsics)
    doc = json.loads(fsspec.open(f"{url}/scene.json", "r").open().read())
    assert doc["num_views"] == 3 and doc["num_frames"] == 5 and doc["rgb_format"] == "png"


def test_mp4_round_trip_through_local_dir(tmp_path, scene):
    small = generate_scene(2, num_views=2, num_frames=5, height=32, width=32)
    write_scene(small, str(tmp_path / "vid"), rgb_format="mp4")
    assert (tmp_path / "vid" / "views" / "001.mp4").exists()
    back = read_scene(str(tmp_path / "vid"))
    assert back.frames.shape == small.frames.shape
    err = (back.frames - small.frames).abs()
    assert err.mean() < 0.05, "mp4 is lossy, but not that lossy"
    assert torch.equal(back.depth, small.depth)
    # A view's video file alone reads as a 1-view monocular scene without cameras.
    mono = open_scene(str(tmp_path / "vid" / "views" / "000.mp4"))
    assert (mono.meta.kind, mono.meta.num_views, mono.meta.num_frames, mono.meta.has_cameras) == ("monocular", 1, 5, False)
    assert torch.equal(mono.read_frames(0, [0, 4]), back.frames[0, [0, 4]])


def test_image_folder_reads_as_monocular_scene(scene):
    root = f"{_mem()}/clip"
    fs, path = fsspec.core.url_to_fs(root)
    for t in range(4):
        buf = io.BytesIO()
        Image.fromarray((scene.frames[0, t].permute(1, 2, 0) * 255).round().byte().numpy()).save(buf, format="PNG")
        fs.pipe_file(f"{path}/frame_{t:03d}.png", buf.getvalue())
    reader = open_scene(root)
    assert (reader.name, reader.meta.num_views, reader.meta.num_frames) == ("clip", 1, 4)
    assert (reader.read_frames(0, [2]) - scene.frames[0, 2:3]).abs().max() <= 0.5 / 255 + 1e-6


def test_meta_errors_name_the_scene():
    good = {"version": 1, "kind": "dynamic", "num_views": 2, "num_frames": 3, "height": 4, "width": 4}
    with pytest.raises(SceneFormatError, match="scene s1: scene.json lacks num_frames"):
        SceneMeta.from_json(json.dumps({k: v for k, v in good.items() if k != "num_frames"}), "s1")
    with pytest.raises(SceneFormatError, match="scene s2: kind"):
        SceneMeta.from_json(json.dumps({**good, "kind": "weird"}), "s2")
    bad_cams = {"extrinsics": np.zeros((3, 3, 4)).tolist(), "intrinsics": np.zeros((2, 3, 3)).tolist()}
    with pytest.raises(SceneFormatError, match=r"scene s3: cameras.extrinsics has shape \(3, 3, 4\)"):
        SceneMeta.from_json(json.dumps({**good, "cameras": bad_cams}), "s3")
    per_view = {"extrinsics": np.zeros((2, 3, 4)).tolist(), "intrinsics": np.eye(3)[None].repeat(2, 0).tolist()}
    meta = SceneMeta.from_json(json.dumps({**good, "cameras": per_view}), "s4")
    assert meta.extrinsics.shape == (2, 3, 3, 4) and meta.intrinsics.shape == (2, 3, 3, 3)
    assert meta.caption is None and SceneMeta.from_json(json.dumps({**good, "caption": "a red cube"}), "s5").caption == "a red cube"
    with pytest.raises(SceneFormatError, match="scene s6: caption must be a string"):
        SceneMeta.from_json(json.dumps({**good, "caption": ["a", "red", "cube"]}), "s6")


def test_too_few_frames_or_views_names_the_scene(scene):
    url = f"{_mem()}/short_scene"
    write_scene(scene, url)
    with pytest.raises(SceneFormatError, match="scene synthetic_dynamic_000001: has 5 frames, needs 9"):
        MultiViewSource([url], num_views=2, num_frames=9, size=(16, 16))[0]
    with pytest.raises(SceneFormatError, match="scene synthetic_dynamic_000001: has 3 views, needs 4"):
        MultiViewSource([url], num_views=4, num_frames=5, size=(16, 16))[0]


def test_mismatched_view_sizes_name_the_scene(scene):
    url = f"{_mem()}/uneven"
    write_scene(scene, url)
    fs, path = fsspec.core.url_to_fs(url)
    buf = io.BytesIO()
    Image.new("RGB", (40, 24)).save(buf, format="PNG")
    for t in range(5):
        fs.pipe_file(f"{path}/views/001/{t:05d}.png", buf.getvalue())
    with pytest.raises(SceneFormatError, match="scene synthetic_dynamic_000001: view 1 frame 0 is 24x40, expected 24x32"):
        MultiViewSource([url], num_views=3, num_frames=5, size=(16, 16))[0]


def test_corrupt_files_are_skipped_counted_and_replaced_deterministically(tmp_path):
    root = _mem()
    urls = []
    for seed in range(3):
        s = generate_scene(seed, num_views=2, num_frames=3, height=16, width=16)
        urls.append(f"{root}/{s.name}")
        write_scene(s, urls[-1])
    fs, path = fsspec.core.url_to_fs(urls[0])
    data = fs.cat_file(f"{path}/views/001/00001.png")
    fs.pipe_file(f"{path}/views/001/00001.png", data[: len(data) // 2])  # truncated PNG
    source = MultiViewSource(urls, num_views=2, num_frames=3, size=(16, 16))
    sample = source[0]
    assert sample["scene"] == "synthetic_dynamic_000001" and sample["skipped"] == 1 and source.skipped == 1
    again = source[0]
    assert torch.equal(again["frames"], sample["frames"]) and source.skipped == 2
    assert source[1]["skipped"] == 0

    # A truncated video is skipped the same way.
    video = generate_scene(7, num_views=1, num_frames=4, height=16, width=16)
    frames = (video.frames[0].permute(0, 2, 3, 1) * 255).round().byte().numpy()
    (tmp_path / "bad.mp4").write_bytes(iio.imwrite("<bytes>", frames, extension=".mp4", plugin="FFMPEG", fps=8, macro_block_size=1)[:300])
    iio.imwrite(tmp_path / "good.mp4", frames, plugin="FFMPEG", fps=8, macro_block_size=1)
    mono = MultiViewSource(str(tmp_path), num_views=1, num_frames=4, size=(16, 16))
    assert mono[0]["scene"] == "good" and mono.skipped == 1
