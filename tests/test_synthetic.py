"""The procedural synthetic 4D scene generator: determinism, shapes and camera/mask/depth geometry."""
import pytest
import torch

from fourd.data.synthetic import generate_scene, look_at


def _project(scene, points):
    """Pixel coordinates [V, T, K, 2] and camera depth [V, T, K] of world points [K, T, 3]."""
    R, t = scene.extrinsics[..., :3], scene.extrinsics[..., 3]  # [V, T, 3, 3], [V, T, 3]
    cam = torch.einsum("vtij,ktj->vtki", R, points) + t[:, :, None]
    pix = torch.einsum("vtij,vtkj->vtki", scene.intrinsics, cam)
    return pix[..., :2] / pix[..., 2:], cam[..., 2]


def test_deterministic_by_seed_and_shapes():
    a = generate_scene(3, num_views=3, num_frames=5, height=24, width=32)
    b = generate_scene(3, num_views=3, num_frames=5, height=24, width=32)
    c = generate_scene(4, num_views=3, num_frames=5, height=24, width=32)
    for field in ("frames", "depth", "masks", "extrinsics", "intrinsics", "object_centers"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.frames, c.frames)
    chunked = generate_scene(3, num_views=3, num_frames=5, height=24, width=32, max_rays=24 * 32 * 2)
    assert torch.allclose(chunked.frames, a.frames, atol=1e-6) and torch.equal(chunked.masks, a.masks)
    assert a.frames.shape == (3, 5, 3, 24, 32) and a.frames.dtype == torch.float32
    assert a.depth.shape == (3, 5, 24, 32) and a.masks.shape == (3, 5, 24, 32) and a.masks.dtype == torch.uint8
    assert a.extrinsics.shape == (3, 5, 3, 4) and a.intrinsics.shape == (3, 5, 3, 3)
    assert 0.0 <= a.frames.min() and a.frames.max() <= 1.0 and (a.depth > 0).all()
    # Rotations are orthonormal with det +1 (OpenCV camera-from-world).
    R = a.extrinsics[..., :3]
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(3, 5), atol=1e-5)


def test_object_centres_project_onto_their_masks():
    scene = generate_scene(11, num_views=4, num_frames=6, height=64, width=64, num_objects=3)
    V, T, H, W = scene.depth.shape
    uv, z = _project(scene, scene.object_centers)
    on_own_mask = checked = 0
    for v in range(V):
        for t in range(T):
            for k in range(scene.object_centers.shape[0]):
                x, y = int(uv[v, t, k, 0].floor()), int(uv[v, t, k, 1].floor())
                if not (0 <= x < W and 0 <= y < H):
                    continue
                checked += 1
                label, depth = int(scene.masks[v, t, y, x]), float(scene.depth[v, t, y, x])
                assert label != 0, "an object centre projects onto the background"
                assert depth <= z[v, t, k] + 1e-3, "the visible surface lies behind the object's centre"
                if label == k + 1:
                    on_own_mask += 1
                    assert depth >= z[v, t, k] - scene.object_radii[k] - 1e-3
    assert checked >= V * T * 2
    assert on_own_mask >= checked // 2


def test_depth_is_camera_z_of_ground_points():
    scene = generate_scene(5, num_views=2, num_frames=2, height=32, width=32)
    H, W = scene.depth.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)
    K, R, t = scene.intrinsics[0, 0], scene.extrinsics[0, 0, :, :3], scene.extrinsics[0, 0, :, 3]
    cam = (pix @ torch.linalg.inv(K).T) * scene.depth[0, 0, ..., None]
    world = (cam - t) @ R  # R^T (x_cam - t)
    background_near = (scene.masks[0, 0] == 0) & (scene.depth[0, 0] < 20)  # ground, not sky
    assert background_near.sum() > 50
    assert world[background_near][:, 2].abs().max() < 1e-3


def test_static_kind_freezes_objects_and_moves_cameras():
    scene = generate_scene(2, num_views=2, num_frames=4, height=16, width=16, kind="static")
    assert scene.kind == "static"
    assert torch.equal(scene.object_centers, scene.object_centers[:, :1].expand_as(scene.object_centers))
    assert not torch.allclose(scene.extrinsics[:, 0], scene.extrinsics[:, -1])
    dynamic = generate_scene(2, num_views=2, num_frames=4, height=16, width=16)
    assert torch.equal(dynamic.extrinsics, dynamic.extrinsics[:, :1].expand_as(dynamic.extrinsics))
    assert not torch.allclose(dynamic.object_centers[:, 0], dynamic.object_centers[:, -1])


def test_look_at_puts_target_on_the_optical_axis():
    eye, target = torch.tensor([3.0, -2.0, 1.5]), torch.tensor([0.2, 0.1, 0.4])
    E = look_at(eye, target)
    cam = E[:, :3] @ target + E[:, 3]
    assert torch.allclose(cam[:2], torch.zeros(2), atol=1e-5) and cam[2] > 0
    # World up (z) maps to image up (negative camera y).
    assert (E[:, :3] @ torch.tensor([0.0, 0.0, 1.0]))[1] < 0


def test_bad_kind_is_rejected():
    with pytest.raises(ValueError, match="kind"):
        generate_scene(0, kind="monocular")
