"""The video task: progressive clip-length schedule through the loop, previews, the mixture source."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from fourd.train.hydra_app import run_task
from video4d.train_task import MixtureSource, VideoTask

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


class RecordingTask(VideoTask):
    """VideoTask that records the shape of every batch it hands out."""

    shapes: list = []

    def next_batch(self, micro_batch, device):
        batch = super().next_batch(micro_batch, device)
        self.shapes.append(tuple(batch["frames"].shape))
        return batch


def test_progressive_frames_schedule_previews_and_tokens(tmp_path):
    overrides = ["launcher=plain", "data.height=16", "data.width=16", "data.num_scenes=2", "schedule.frames=[[0,5],[2,9]]",
                 "train.steps=3", "train.checkpoint_every=0", "train.export=none", "train.preview_every=3", "train.progress=false"]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train_video4d", overrides=overrides)
    RecordingTask.shapes = []
    result = run_task(cfg, lambda env: RecordingTask(cfg, env), str(tmp_path))
    assert result.step == 3
    assert [s[2] for s in RecordingTask.shapes] == [5, 5, 9]  # frames per clip switch at step 2 (0-based)
    assert RecordingTask.shapes[0] == (1, 2, 5, 3, 16, 16)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 for r in rows)
    # tokens per sample: V * T_latent * (H/8/2) * (W/8/2) = 2*2*1*1 then 2*3*1*1
    assert rows[0]["tokens_per_s"] / rows[0]["samples_per_s"] == pytest.approx(4)
    assert rows[2]["tokens_per_s"] / rows[2]["samples_per_s"] == pytest.approx(6)
    assert (tmp_path / "samples" / "preview_00000003.png").is_file()


def test_mixture_source_follows_clip_length(tmp_path):
    from fourd.data import write_synthetic_dataset

    urls = write_synthetic_dataset(str(tmp_path / "scenes"), 2, kinds=("dynamic", "static"), num_views=3, num_frames=9, height=16, width=16)
    sources = {"objects": {"type": "multiview", "scenes": [urls[0]], "ratio": 0.5}, "static": {"type": "static", "scenes": [urls[1]], "ratio": 0.5}}
    source = MixtureSource(sources, views=2, height=16, width=16, seed=0, epoch_size=4)
    for index, frames in ((0, 5), (1, 9), (2, 5), (3, 9)):
        sample = source.sample(index, frames)
        assert tuple(sample["frames"].shape) == (2, frames, 3, 16, 16)
        assert sample["drop_freeze_time_frame_cond"] == (sample["kind"] == "static")
    assert torch.equal(source.sample(1, 9)["frames"], source.sample(1, 9)["frames"])  # deterministic in position
    with pytest.raises(ValueError, match="unknown type"):
        MixtureSource({"x": {"type": "nope", "scenes": [urls[0]], "ratio": 1.0}}, 2, 16, 16)
