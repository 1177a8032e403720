"""The mixture of sources: ratios, determinism, sharding, exact resumption, view reversal, collation."""
import uuid

import pytest
import torch
from torch.utils.data import DataLoader

from fourd.data import (
    DEFAULT_RATIOS,
    HomographyVideoSource,
    MixtureDataset,
    MixtureSampler,
    MultiViewSource,
    StaticSceneSource,
    write_synthetic_dataset,
)


@pytest.fixture(scope="module")
def sources():
    root = f"memory://test_data_mixture/{uuid.uuid4().hex}"
    common = {"num_frames": 5, "height": 16, "width": 16}
    dynamic = write_synthetic_dataset(f"{root}/dyn", 3, seed=0, num_views=3, **common)
    static = write_synthetic_dataset(f"{root}/static", 2, seed=100, kinds=("static",), num_views=1, **common)
    V, T, size = 2, 3, (16, 16)
    return {
        "objects_4d": MultiViewSource(dynamic, V, T, size, crop="random"),
        "scenes_4d": MultiViewSource(dynamic[:2], V, T, size, frame_stride=(1, 2)),
        "homography_video": HomographyVideoSource(f"{root}/dyn", V, T, size),
        "static": StaticSceneSource(static, V, T, size),
    }


def test_default_ratios_hold_over_many_draws(sources):
    mix = MixtureDataset(sources, seed=3, epoch_size=4000)
    names = [mix.locate(p)[0] for p in range(8000)]
    for name, ratio in DEFAULT_RATIOS.items():
        assert abs(names.count(name) / len(names) - ratio) < 0.02, name
    # Scenes of a source are visited evenly (fresh permutations), and stay in range.
    picks = [mix.locate(p)[1] for p in range(4000) if mix.locate(p)[0] == "objects_4d"]
    counts = torch.bincount(torch.tensor(picks), minlength=3)
    assert counts.max() - counts.min() <= 1


def test_custom_ratios_and_validation(sources):
    mix = MixtureDataset(sources, ratios={"objects_4d": 0, "scenes_4d": 1, "homography_video": 3, "static": 0}, epoch_size=2000)
    names = [mix.locate(p)[0] for p in range(2000)]
    assert set(names) == {"scenes_4d", "homography_video"}
    assert abs(names.count("homography_video") / 2000 - 0.75) < 0.03
    with pytest.raises(ValueError, match="ratios name"):
        MixtureDataset({"objects_4d": sources["objects_4d"]})


def test_exactly_deterministic_by_seed_and_epoch(sources):
    a, b = MixtureDataset(sources, seed=1, epoch_size=20), MixtureDataset(sources, seed=1, epoch_size=20)
    other = MixtureDataset(sources, seed=2, epoch_size=20)
    assert [a.locate(p) for p in range(40)] == [b.locate(p) for p in range(40)]
    assert [a.locate(p) for p in range(20)] != [other.locate(p) for p in range(20)]
    assert [a.locate(p) for p in range(20)] != [a.locate(p) for p in range(20, 40)]  # epochs differ
    for p in (0, 7, 23):
        x, y = a[p], b[p]
        assert x["source"] == y["source"] and x["scene"] == y["scene"] and x["views_reversed"] == y["views_reversed"]
        assert torch.equal(x["frames"], y["frames"])


def test_ranks_shard_an_epoch_disjointly():
    shards = [list(MixtureSampler(10, rank=r, world_size=3, epoch=2)) for r in range(3)]
    flat = sorted(p for shard in shards for p in shard)
    assert flat == list(range(20, 29)) and all(len(s) == 3 for s in shards)


def test_resume_from_a_position_reproduces_the_continuation(sources):
    mix = MixtureDataset(sources, seed=5, epoch_size=12)
    sampler = MixtureSampler(len(mix), rank=1, world_size=2, epoch=1)
    full = list(sampler)
    it = iter(sampler)
    head = [next(it) for _ in range(2)]
    state = sampler.state_dict()
    assert state == {"epoch": 1, "index": 2} and head == full[:2]
    resumed = MixtureSampler(len(mix), rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert list(resumed) == full[2:]
    resumed.set_epoch(1)  # same epoch: keeps the resume point only for the first pass
    assert list(resumed) == full
    # Through a DataLoader: batches after resuming equal the original ones.
    loader = DataLoader(mix, batch_size=2, sampler=MixtureSampler(len(mix), rank=1, world_size=2, epoch=1))
    batches = list(loader)
    restarted = MixtureSampler(len(mix), rank=1, world_size=2)
    restarted.load_state_dict({"epoch": 1, "index": 2})
    again = list(DataLoader(mix, batch_size=2, sampler=restarted))
    assert len(again) == len(batches) - 1
    for x, y in zip(again, batches[1:]):
        assert x["source"] == y["source"] and x["scene"] == y["scene"] and torch.equal(x["frames"], y["frames"])
        assert x["cameras"]["extrinsics"].shape == (2, 2, 3, 3, 4)


def test_view_reversal_and_static_flag(sources):
    keep = MixtureDataset(sources, seed=9, epoch_size=30, reverse_views_prob=0.0)
    flip = MixtureDataset(sources, seed=9, epoch_size=30, reverse_views_prob=1.0)
    for p in range(30):
        x, y = keep[p], flip[p]
        assert not x["views_reversed"] and y["views_reversed"]
        assert torch.equal(y["frames"], x["frames"].flip(0))
        assert torch.equal(y["cameras"]["intrinsics"].nan_to_num(), x["cameras"]["intrinsics"].flip(0).nan_to_num())
        assert x["drop_freeze_time_frame_cond"] == (x["source"] == "static") == (x["kind"] == "static")
    half = MixtureDataset(sources, seed=9, epoch_size=400, reverse_views_prob=0.5)
    rate = sum(half[p]["views_reversed"] for p in range(0, 400, 4)) / 100
    assert 0.3 < rate < 0.7
