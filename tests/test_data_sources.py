"""Sources: multi-view clips with consistent crops/intrinsics, homography pseudo-views, static duplication."""
import uuid

import numpy as np
import pytest
import torch

from fourd.data import (
    HomographyVideoSource,
    MultiViewSource,
    SceneFormatError,
    StaticSceneSource,
    generate_scene,
    open_scene,
    write_scene,
)
from fourd.data.homography import UNIT_CORNERS, homography_from_corners, homography_path, random_corner_path, warp_frames
from fourd.data.transforms import ResizeCrop


@pytest.fixture(scope="module")
def dynamic_scene():
    scene = generate_scene(21, num_views=4, num_frames=7, height=48, width=64, num_objects=3)
    url = f"memory://test_data_sources/{uuid.uuid4().hex}/{scene.name}"
    write_scene(scene, url)
    return scene, url


@pytest.fixture(scope="module")
def static_scene():
    scene = generate_scene(22, num_views=2, num_frames=6, height=32, width=32, kind="static")
    url = f"memory://test_data_sources/{uuid.uuid4().hex}/{scene.name}"
    write_scene(scene, url)
    return scene, url


def test_resized_cropped_depth_agrees_with_rescaled_intrinsics(dynamic_scene):
    """Object centres projected with the sample's intrinsics land where the sample's depth sees them."""
    scene, url = dynamic_scene
    source = MultiViewSource([url], num_views=3, num_frames=7, size=(24, 28), crop="random", with_depth=True, seed=5)
    for i in range(3):
        source.set_epoch(i)
        sample = source[0]
        E, K, depth = sample["cameras"]["extrinsics"], sample["cameras"]["intrinsics"], sample["depth"]
        assert sample["frames"].shape == (3, 7, 3, 24, 28) and depth.shape == (3, 7, 24, 28)
        assert not torch.allclose(K, scene.intrinsics[:3])
        centres = scene.object_centers  # [K, T, 3]: all 7 frames are taken
        cam = torch.einsum("vtij,ktj->vtki", E[..., :3], centres) + E[..., 3][:, :, None]
        pix = torch.einsum("vtij,vtkj->vtki", K, cam)
        uv = pix[..., :2] / pix[..., 2:]
        hits = 0
        for v, t, k in np.ndindex(3, 7, centres.shape[0]):
            x, y = int(uv[v, t, k, 0].floor()), int(uv[v, t, k, 1].floor())
            if 0 <= x < 28 and 0 <= y < 24:
                z, r = float(cam[v, t, k, 2]), float(scene.object_radii[k])
                # Visible surface: the object itself or something in front of it, never the background.
                assert depth[v, t, y, x] <= z + 0.05
                hits += int(depth[v, t, y, x] >= z - r - 0.05)
        assert hits > 0


def test_resize_crop_plan_moves_principal_point_with_content():
    frames = torch.rand(2, 3, 30, 40)
    plan = ResizeCrop.plan((30, 40), (15, 15), crop="center")
    assert plan.resized == (15, 20) and (plan.top, plan.left) == (0, 2)
    K = torch.tensor([[50.0, 0, 20.0], [0, 50.0, 15.0], [0, 0, 1]])
    K2 = plan.intrinsics(K)
    assert torch.allclose(K2, torch.tensor([[25.0, 0, 8.0], [0, 25.0, 7.5], [0, 0, 1]]))
    assert plan.frames(frames).shape == (2, 3, 15, 15)
    crop_only = ResizeCrop.plan((30, 40), (30, 30), crop="random", rng=np.random.default_rng(0))
    assert torch.equal(crop_only.frames(frames), frames[..., crop_only.left : crop_only.left + 30])


def test_homography_from_corners_maps_the_corners():
    dst = UNIT_CORNERS * 0.7 + torch.tensor([0.1, -0.2]) + torch.tensor([[0.05, 0], [0, 0.03], [-0.04, 0], [0, 0.02]])
    H = homography_from_corners(UNIT_CORNERS, dst)
    pts = torch.cat([UNIT_CORNERS, torch.ones(4, 1)], -1) @ H.T
    assert torch.allclose(pts[:, :2] / pts[:, 2:], dst, atol=1e-5)


def test_warp_by_a_translation_shifts_pixels():
    frames = torch.rand(1, 3, 8, 10)
    shift = torch.tensor([[[1.0, 0, 2 * 3 / 10], [0, 1.0, 0], [0, 0, 1]]])  # sample 3 pixels to the right
    warped = warp_frames(frames, shift)
    assert torch.allclose(warped[..., :7], frames[..., 3:], atol=1e-5)


def test_corner_paths_are_smooth_and_inside_the_image():
    rng = np.random.default_rng(0)
    for _ in range(5):
        corners = random_corner_path(17, rng)
        assert corners.abs().max() <= 1.0
        step = (corners[1:] - corners[:-1]).norm(dim=-1).amax()
        total = (corners[-1] - corners[0]).norm(dim=-1).amax()
        assert step <= 1.5 / 16 * total + 1e-6
        H = homography_path(corners)
        dH = (H[1:] - H[:-1]).abs().amax()
        assert dH <= 0.25 * (H[-1] - H[0]).abs().amax() + 1e-6


def test_homography_source_first_view_is_the_input(dynamic_scene):
    scene, url = dynamic_scene
    source = HomographyVideoSource([url], num_views=3, num_frames=7, size=(48, 64), seed=1)
    sample = source[0]
    reader = open_scene(url)
    clip = reader.read_frames(0, list(range(7)))
    assert torch.equal(sample["frames"][0], clip)
    for v in (1, 2):
        assert (sample["frames"][v] - clip).abs().mean() > 0.01
        # Pseudo-views move smoothly: adjacent frames closer than first vs last.
        view = sample["frames"][v]
        assert (view[1:] - view[:-1]).abs().mean() < (view[-1] - view[0]).abs().mean()
    assert sample["kind"] == "homography" and not sample["has_cameras"]
    assert torch.isnan(sample["cameras"]["extrinsics"]).all() and not sample["drop_freeze_time_frame_cond"]


def test_static_source_repeats_trajectory_frames_over_time(static_scene):
    scene, url = static_scene
    source = StaticSceneSource([url], num_views=3, num_frames=5, size=(32, 32), view_stride=2)
    sample = source[0]
    frames = sample["frames"]
    assert frames.shape == (3, 5, 3, 32, 32)
    for t in range(1, 5):
        assert torch.equal(frames[:, t], frames[:, 0])
    assert not torch.equal(frames[0, 0], frames[1, 0])
    assert sample["kind"] == "static" and sample["drop_freeze_time_frame_cond"] and sample["has_cameras"]
    # Views are trajectory frames 2 apart of view 0: cameras and images match those frames.
    E = sample["cameras"]["extrinsics"]
    picks = [int((scene.extrinsics[0] - E[v, 0]).abs().amax((-1, -2)).argmin()) for v in range(3)]
    assert picks[1] - picks[0] == 2 and picks[2] - picks[1] == 2
    assert (frames[:, 0] - scene.frames[0, picks]).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(E, E[:, :1].expand_as(E))


def test_static_source_rejects_moving_scenes(dynamic_scene):
    _, url = dynamic_scene
    with pytest.raises(SceneFormatError, match="scene synthetic_dynamic_000021: kind 'dynamic'"):
        StaticSceneSource([url], num_views=2, num_frames=3, size=(16, 16))[0]


def test_static_source_uses_views_of_single_frame_scenes():
    scene = generate_scene(23, num_views=4, num_frames=1, height=16, width=16, kind="static")
    url = f"memory://test_data_sources/{uuid.uuid4().hex}/{scene.name}"
    write_scene(scene, url)
    sample = StaticSceneSource([url], num_views=4, num_frames=3, size=(16, 16))[0]
    assert (sample["frames"][:, 2] - scene.frames[:, 0]).abs().max() <= 0.5 / 255 + 1e-6
