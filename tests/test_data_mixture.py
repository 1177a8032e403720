"""The mixture of sources and the training loader: ratios, determinism, sharding by data-parallel rank,
workers that reproduce synchronous reads, exact resumption, skip counting, view reversal."""
import uuid

import fsspec
import pytest
import torch
from torch.utils.data import Dataset

from fourd.data import (
    DEFAULT_RATIOS,
    HomographyVideoSource,
    MixtureDataset,
    MultiViewSource,
    StaticSceneSource,
    write_synthetic_dataset,
)
from fourd.data.loader import LoaderConfig, SampleKey, StepLoader, StepSampler, TaskData


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


def test_step_sampler_shards_micro_batches_by_data_parallel_rank():
    samplers = [StepSampler(2, accumulation=3, dp_rank=r, dp_size=3) for r in range(3)]
    keys = [k for j in range(4) for s in samplers for k in s.keys(j)]
    assert sorted(k.index for k in keys) == list(range(24))  # disjoint, nothing dropped
    assert samplers[1].keys(0) == [SampleKey(2, 0), SampleKey(3, 0)]  # global micro-batch 1
    assert samplers[1].keys(3) == [SampleKey(20, 1), SampleKey(21, 1)]  # 4th micro-batch = step 1 (3 per step)
    assert next(iter(StepSampler(2, 3, dp_rank=1, dp_size=3, start=3))) == samplers[1].keys(3)


class _ByIndex(Dataset):
    def __init__(self, mix):
        self.mix = mix

    def __getitem__(self, key):
        return self.mix[key.index]


def _collate(samples):
    return {"frames": torch.stack([s["frames"] for s in samples]), "scenes": [s["scene"] for s in samples]}


def test_loader_workers_reproduce_synchronous_reads_resume_exactly_and_count_skips():
    root = f"memory://test_data_loader/{uuid.uuid4().hex}"
    urls = write_synthetic_dataset(f"{root}/dyn", 2, seed=0, num_views=2, num_frames=3, height=16, width=16)
    fs, path = fsspec.core.url_to_fs(urls[0])
    fs.pipe_file(f"{path}/views/001/00001.png", b"not a png")  # corrupt: skipped, replaced by the next scene
    static = write_synthetic_dataset(f"{root}/static", 1, seed=9, kinds=("static",), num_views=1, num_frames=4, height=16, width=16)
    sources = {"objects_4d": MultiViewSource(urls, 2, 3, (16, 16)), "static": StaticSceneSource(static, 2, 3, (16, 16))}
    mix = MixtureDataset(sources, {"objects_4d": 0.8, "static": 0.2}, seed=3, epoch_size=6)
    data = TaskData(_ByIndex(mix), _collate)
    sync = StepLoader(data, 2, dp_rank=1, dp_size=2, cfg=LoaderConfig(workers=0))
    want = [sync.next(torch.device("cpu")) for _ in range(5)]
    assert sync.skipped > 0 and sync.state_dict() == {"position": 10, "skipped": sync.skipped}
    rng = torch.get_rng_state()
    first = StepLoader(data, 2, dp_rank=1, dp_size=2, cfg=LoaderConfig(workers=2, prefetch=2))
    head = [first.next(torch.device("cpu")) for _ in range(2)]  # the workers prefetch beyond these
    state = first.state_dict()
    first.close()
    assert torch.equal(torch.get_rng_state(), rng)  # starting workers leaves the training process's RNG alone
    resumed = StepLoader(data, 2, dp_rank=1, dp_size=2, cfg=LoaderConfig(workers=2))
    resumed.load_state_dict(state)
    tail = [resumed.next(torch.device("cpu")) for _ in range(3)]
    resumed.close()
    for got, ref in zip(head + tail, want):
        assert got["scenes"] == ref["scenes"] and torch.equal(got["frames"], ref["frames"])
    assert resumed.skipped == sync.skipped
    with pytest.raises(ValueError, match="micro_batch"):
        StepLoader(data, 4).load_state_dict(state | {"position": 6})


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
