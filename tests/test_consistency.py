"""Reprojection consistency: exact hand-computed cases (identical cameras; a 2-pixel stereo shift of
a fronto-parallel plane), a rendered synthetic scene with ground-truth geometry (consistent views
score near zero, a perturbed view scores worse), and the reconstructor-as-geometry path."""
from types import SimpleNamespace

import pytest
import torch

from eval.consistency import Geometry, geometry_from_reconstructor, reprojection_consistency
from fourd.data.synthetic import generate_scene

H = W = 16


def _plane_geometry(centers_x, depth=4.0, focal=16.0):
    """Views [1, V, 1] of a fronto-parallel plane at z = depth; camera v translated to x = centers_x[v]."""
    V = len(centers_x)
    ext = torch.zeros(1, V, 1, 3, 4)
    ext[..., :3, :3] = torch.eye(3)
    ext[0, :, 0, 0, 3] = -torch.tensor(centers_x)  # camera-from-world: x_cam = x_world - c
    K = torch.tensor([[focal, 0, W / 2], [0, focal, H / 2], [0, 0, 1]]).expand(1, V, 1, 3, 3)
    return Geometry(torch.full((1, V, 1, H, W), depth), ext, K)


def test_identical_cameras_compare_pixels_one_to_one():
    g = torch.Generator().manual_seed(0)
    grids = torch.rand(1, 2, 1, 3, H, W, generator=g)
    out = reprojection_consistency(grids, _plane_geometry([0.0, 0.0]))
    expected = (grids[0, 0, 0] - grids[0, 1, 0]).abs().mean().double()
    torch.testing.assert_close(out["error"][0, 0], expected)
    torch.testing.assert_close(out["coverage"], torch.ones(1, 1, dtype=torch.float64))
    torch.testing.assert_close(out["pair_error"][0, 0, 0, 1], expected)
    assert out["pair_error"][0, 0, 0, 0].isnan()


def test_two_pixel_stereo_shift_is_perfectly_consistent():
    # baseline 0.5 at depth 4 with focal 16 px: a disparity of exactly 2 px (view 1 sees x at u - 2)
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, H, W, generator=g)
    shifted = torch.roll(image, shifts=-2, dims=-1)  # shifted[u] = image[u + 2]
    grids = torch.stack([image, shifted])[None, :, None]
    out = reprojection_consistency(grids, _plane_geometry([0.0, 0.5]))
    assert out["error"].item() < 1e-6
    torch.testing.assert_close(out["coverage"], torch.tensor([[(W - 2) / W]], dtype=torch.float64))
    # a view with the wrong content (shifted by 3 px instead of 2) is caught, by exactly the L1 of the mismatch:
    # view-0 column u lands on view-1 column u - 2 (and back), for u = 2 ... W - 1
    wrong = torch.roll(image, shifts=-3, dims=-1)
    mismatch = reprojection_consistency(torch.stack([image, wrong])[None, :, None], _plane_geometry([0.0, 0.5]))
    expected = (image[..., 2:] - wrong[..., : W - 2]).abs().mean().double()
    torch.testing.assert_close(mismatch["pair_error"][0, 0, 0, 1], expected)
    torch.testing.assert_close(mismatch["pair_error"][0, 0, 1, 0], expected)
    torch.testing.assert_close(mismatch["error"][0, 0], expected)


@pytest.fixture(scope="module")
def scene():
    return generate_scene(3, num_views=4, num_frames=2, height=48, width=48)


def test_rendered_scene_with_true_geometry_scores_near_zero_and_a_perturbed_view_worse(scene):
    grids = scene.frames[None]
    geo = Geometry(scene.depth[None], scene.extrinsics[None], scene.intrinsics[None])
    good = reprojection_consistency(grids, geo)
    assert good["error"].shape == (1, 2) and good["coverage"].min() > 0.2
    assert good["mean"].item() < 0.05  # resampling of hard texture edges only (median per-pixel error ~1e-4)
    flipped = grids.clone()
    flipped[:, 2] = flipped[:, 2].flip(-1)
    bad = reprojection_consistency(flipped, geo)
    assert bad["mean"].item() > 2 * good["mean"].item()
    # the perturbed view is the one whose pairs got worse
    worse = (bad["pair_error"] - good["pair_error"]).nan_to_num(0)[0, 0]
    assert worse[2].sum() > 5 * worse[[0, 1, 3]][:, [0, 1, 3]].abs().sum()
    # two views shuffled (their images swapped, the geometry kept) score worse too
    shuffled = grids[:, [0, 2, 1, 3]]
    assert reprojection_consistency(shuffled, geo)["mean"].item() > 2 * good["mean"].item()


def test_geometry_from_a_reconstructor_module_and_confidence_mask(scene):
    grids = scene.frames[None]
    conf = (scene.masks[None] > 0).float() + 1.0  # 2 on objects/ground, 1 on the sky

    class FakeReconstructor(torch.nn.Module):
        def forward(self, images):
            assert images.shape == grids.shape
            return SimpleNamespace(depth=scene.depth[None], extrinsics=scene.extrinsics[None],
                                   intrinsics=scene.intrinsics[None], depth_conf=conf)

    predicted = reprojection_consistency(grids, geometry_from_reconstructor(FakeReconstructor()))
    given = reprojection_consistency(grids, Geometry(scene.depth[None], scene.extrinsics[None], scene.intrinsics[None], conf))
    torch.testing.assert_close(predicted["error"], given["error"])
    masked = reprojection_consistency(grids, geometry_from_reconstructor(FakeReconstructor()), min_confidence=1.5)
    assert (masked["coverage"] < predicted["coverage"]).all()
    with pytest.raises(ValueError, match=r"Geometry.depth must be \[1, 4, 2, 48, 48\]"):
        reprojection_consistency(grids, Geometry(scene.depth, scene.extrinsics[None], scene.intrinsics[None]))
