"""PLY / cameras JSON / mp4 export: round trips, the standard PLY layout, readable videos."""
import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from plyfile import PlyData

from fourd.formats import PLY_PROPERTIES, SH_C0, load_cameras_json, load_ply, save_cameras_json, save_ply, save_video
from recon.export import export_sequence

STANDARD_3DGS_PROPERTIES = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    + [f"f_rest_{i}" for i in range(45)]
    + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
)


def _gaussians(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    quats = torch.randn(n, 4, generator=g)
    return {
        "means": torch.randn(n, 3, generator=g),
        "quats": quats / quats.norm(dim=1, keepdim=True),
        "scales": torch.rand(n, 3, generator=g) * 0.5 + 1e-3,
        "opacities": torch.rand(n, generator=g) * 0.98 + 0.01,
        "colors": torch.rand(n, 3, generator=g),
    }


def test_ply_round_trip_inverts_the_activations(tmp_path):
    g = _gaussians()
    url = str(tmp_path / "g.ply")
    save_ply(url, **g)
    back = load_ply(url)
    for key in g:
        torch.testing.assert_close(back[key], g[key], rtol=1e-5, atol=1e-6)


def test_ply_stores_the_standard_3dgs_properties_and_raw_values(tmp_path):
    g = _gaussians(7)
    url = str(tmp_path / "g.ply")
    save_ply(url, **g)
    ply = PlyData.read(url)
    assert [e.name for e in ply.elements] == ["vertex"]
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == STANDARD_3DGS_PROPERTIES == list(PLY_PROPERTIES)
    assert all(p.val_dtype in ("f4", "float32") for p in vertex.properties)
    assert ply.text is False and vertex.count == 7
    data = vertex.data
    o = g["opacities"].double().numpy()
    np.testing.assert_allclose(data["opacity"], np.log(o / (1 - o)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data["scale_1"], np.log(g["scales"][:, 1].numpy()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data["f_dc_2"], (g["colors"][:, 2].numpy() - 0.5) / SH_C0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data["rot_0"], g["quats"][:, 0].numpy(), rtol=1e-6, atol=1e-7)
    assert not any(np.any(data[f"f_rest_{i}"]) for i in range(45)) and not np.any(data["nx"])


def test_ply_through_fsspec_memory_and_bad_shapes():
    g = _gaussians(5, seed=1)
    save_ply("memory://exports/scene.ply", **g)
    torch.testing.assert_close(load_ply("memory://exports/scene.ply")["means"], g["means"])
    with pytest.raises(ValueError, match="quats must be \\[5, 4\\]"):
        save_ply("memory://exports/bad.ply", g["means"], g["quats"][:, :3], g["scales"], g["opacities"], g["colors"])


def test_cameras_json_round_trip(tmp_path):
    V = 3
    R = torch.linalg.qr(torch.randn(V, 3, 3, dtype=torch.float64)).Q
    extrinsics = torch.cat([R, torch.randn(V, 3, 1, dtype=torch.float64)], dim=2)
    intrinsics = torch.tensor([[300.0, 0.0, 160.5], [0.0, 310.0, 120.25], [0.0, 0.0, 1.0]], dtype=torch.float64).repeat(V, 1, 1)
    url = str(tmp_path / "cameras.json")
    save_cameras_json(url, extrinsics, intrinsics, 320, 240)
    back = load_cameras_json(url)
    torch.testing.assert_close(back["extrinsics"], extrinsics, rtol=0, atol=0)
    torch.testing.assert_close(back["intrinsics"], intrinsics, rtol=0, atol=0)
    assert (back["width"], back["height"]) == (320, 240)
    doc = json.loads((tmp_path / "cameras.json").read_text())
    assert doc["convention"] == "opencv" and doc["extrinsics"] == "camera_from_world"
    assert len(doc["cameras"]) == V and np.array(doc["cameras"][1]["extrinsic"]).shape == (3, 4)


@pytest.mark.parametrize("size", [(16, 24), (15, 21)])
def test_video_written_and_readable_with_all_frames(tmp_path, size):
    H, W = size
    T = 6
    frames = torch.linspace(0, 1, T)[:, None, None, None].expand(T, H, W, 3).clone()
    url = str(tmp_path / "v.mp4")
    save_video(url, frames, fps=8)
    read = iio.imread(url, plugin="FFMPEG")
    assert read.shape == (T, H + H % 2, W + W % 2, 3)
    np.testing.assert_allclose(read.mean(axis=(1, 2, 3)) / 255.0, frames.mean(dim=(1, 2, 3)).numpy(), atol=0.03)


def test_export_sequence_writes_every_file(tmp_path):
    out = str(tmp_path / "scene")
    T = 2
    cameras = {
        "extrinsics": torch.eye(4)[:3].repeat(2, 1, 1),
        "intrinsics": torch.tensor([[20.0, 0.0, 8.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]]).repeat(2, 1, 1),
        "width": 16,
        "height": 16,
    }
    renders = {"novel_views": torch.rand(3, 16, 16, 3), "novel_times": torch.rand(4, 16, 16, 3)}
    written = export_sequence(out, [_gaussians(4, seed=t) for t in range(T)], cameras, renders, fps=4)
    names = sorted(p.split("/")[-1] for p in written)
    assert names == ["cameras.json", "gaussians_t0000.ply", "gaussians_t0001.ply", "novel_times.mp4", "novel_views.mp4"]
    assert iio.imread(f"{out}/novel_times.mp4", plugin="FFMPEG").shape == (4, 16, 16, 3)
    torch.testing.assert_close(load_ply(f"{out}/gaussians_t0001.ply")["colors"], _gaussians(4, seed=1)["colors"])
