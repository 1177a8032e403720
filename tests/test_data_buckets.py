"""Grid buckets: scenes grouped by the grid they can fill (nearest aspect ratio), one grid per
micro-batch drawn in proportion to bucket sizes, ratios kept, errors that name the bucket."""
from __future__ import annotations

import uuid
from collections import Counter

import pytest

from fourd.data import Grid, MixtureDataset, MultiViewSource, StaticSceneSource, write_synthetic_dataset
from fourd.data.buckets import parse_grids


@pytest.fixture(scope="module")
def roots():
    root = f"memory://test_data_buckets/{uuid.uuid4().hex}"
    common = {"num_views": 2, "num_frames": 9}
    write_synthetic_dataset(f"{root}/mv", 3, seed=0, height=16, width=32, **common)  # landscape
    write_synthetic_dataset(f"{root}/mv", 1, seed=10, height=32, width=16, **common)  # portrait
    write_synthetic_dataset(f"{root}/mv", 1, seed=20, height=16, width=32, num_views=2, num_frames=3)  # too short for 5 frames
    write_synthetic_dataset(f"{root}/static", 2, seed=30, kinds=("static",), height=16, width=16, num_views=1, num_frames=4)
    return root


def _mix(roots, grids, **kwargs):
    sources = {"mv": MultiViewSource(f"{roots}/mv", 2, 5, (16, 32)), "static": StaticSceneSource(f"{roots}/static", 2, 5, (16, 16))}
    return MixtureDataset(sources, kwargs.pop("ratios", {"mv": 0.75, "static": 0.25}), seed=1, grids=grids, **kwargs)


def test_micro_batches_share_one_grid_drawn_by_bucket_size(roots):
    land, port, square = Grid(2, 5, 16, 32), Grid(2, 5, 32, 16), Grid(2, 5, 16, 16)
    mix = _mix(roots, [land, port, square, Grid(2, 9, 16, 32)], group_size=2, epoch_size=2000)
    located = [mix.locate(p, 5) for p in range(2000)]
    for g in range(0, 2000, 2):
        assert located[g][2] == located[g + 1][2]  # a micro-batch never mixes shapes
    scenes = mix.sources["mv"].scenes
    for name, index, grid in located:
        scene = scenes[index].rsplit("/", 1)[1] if name == "mv" else None
        if name == "static":
            assert grid == square  # 16x16 scenes: the square grid is nearest
        else:
            assert grid == (port if scene == "synthetic_dynamic_000010" else land)
            assert scene != "synthetic_dynamic_000020"  # 3 frames fit no 5-frame grid
    share = Counter(grid for _, _, grid in located)
    # weights: mv's 0.75 over its 4 fitting scenes (3 landscape, 1 portrait); static's 0.25 all square
    assert abs(share[land] / 2000 - 0.5625) < 0.04 and abs(share[port] / 2000 - 0.1875) < 0.03
    assert abs(Counter(n for n, _, _ in located)["mv"] / 2000 - 0.75) < 0.03  # the ratios hold overall
    sample = mix.sample(0, 5)
    assert tuple(sample["frames"].shape) == (2, 5, 3, sample["grid"].height, sample["grid"].width)
    long = [mix.locate(p, 9) for p in range(200)]  # the 9-frame stage: only its grid (static scenes fit any length)
    assert {grid for _, _, grid in long} == {Grid(2, 9, 16, 32)} and {n for n, _, _ in long} == {"mv", "static"}
    with pytest.raises(ValueError, match="no bucket has 7 frames"):
        mix.locate(0, 7)


def test_a_bucket_no_scene_fits_and_malformed_lists_fail_naming_the_key(roots):
    with pytest.raises(ValueError, match=r"data.buckets\[1\] = \[4, 5, 16, 32\].*matches no scene"):
        _mix(roots, [Grid(2, 5, 16, 32), Grid(4, 5, 16, 32)], bucket_key="data.buckets")
    with pytest.raises(ValueError, match=r"data.buckets\[1\] = \[8, 29\] is not"):
        parse_grids([[8, 29, 144, 256], [8, 29]])
    with pytest.raises(ValueError, match="listed twice"):
        parse_grids([[8, 29, 144, 256], {"views": 8, "frames": 29, "height": 144, "width": 256}])


def test_a_missing_or_empty_dataset_root_fails_at_start_naming_it(tmp_path):
    from fourd.data import SceneFormatError
    from video4d.data import MixtureSource

    (tmp_path / "empty").mkdir()
    for root, message in ((tmp_path / "missing", "is not a directory"), (tmp_path / "empty", "holds no scenes")):
        with pytest.raises(SceneFormatError, match=f"dataset root {root} {message}"):
            MixtureSource({"objects_4d": {"type": "multiview", "scenes": str(root), "ratio": 1.0}}, 2, 16, 16)
