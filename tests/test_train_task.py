"""The video task: progressive clip-length schedule through the loop, previews, the mixture source."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from fourd.train.hydra_app import run_task
from fourd.data.loader import SampleKey
from video4d.data import MixtureSource, collate
from video4d.train_task import VideoTask

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


class RecordingTask(VideoTask):
    """VideoTask that records the shape of every batch it trains on."""

    shapes: list = []

    def loss(self, model, batch, generator):
        self.shapes.append(tuple(batch["frames"].shape))
        return super().loss(model, batch, generator)


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


class _CountingEncoder:
    """Stand-in text encoder: a prompt becomes one row per word (the word's length and a hash)."""

    def __init__(self):
        self.calls = []

    def encode(self, prompts):
        self.calls.extend(prompts)
        return [torch.tensor([[float(len(w)), float(hash(w) % 97)] + [0.0] * 30 for w in p.split()] + [[1.0] * 32]) for p in prompts]


def test_caption_contexts_encode_once_per_scene_and_drop_to_the_encoded_empty_prompt():
    from video4d.text_context import CaptionContexts

    enc = _CountingEncoder()
    texts = CaptionContexts(32, 8, encoder=enc, dropout=0.25)
    assert enc.calls == [""]  # the empty prompt, encoded once up front (not zeros)
    samples = [{"scene": "a", "caption": "red cube left"}, {"scene": "b", "caption": "blue ball"}, {"scene": "a", "caption": "red cube left"}]
    ctx = texts(samples, device="cpu")  # no generator: no dropout
    assert ctx.shape == (3, 8, 32) and enc.calls == ["", "red cube left", "blue ball"]
    torch.testing.assert_close(ctx[0, :4], enc.encode(["red cube left"])[0])
    assert torch.equal(ctx[0], ctx[2]) and not torch.equal(ctx[0], ctx[1])
    empty = torch.nn.functional.pad(enc.encode([""])[0], (0, 0, 0, 7))
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([texts(samples, g) for _ in range(2000)])
    dropped = (drawn == empty).all(dim=(1, 2))
    assert abs(float(dropped.float().mean()) - 0.25) < 0.02
    assert bool(empty[0].any())  # the empty-prompt embedding is not zeros
    with pytest.raises(ValueError, match="empty_context_file"):
        CaptionContexts(32, 8, context_file="unused.safetensors", dropout=0.1)


def _task(tmp_path, *overrides):
    from fourd.train.distributed import dist_env

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train_video4d", overrides=["launcher=plain", "data.height=16", "data.width=16", *overrides])
    task = VideoTask(cfg, dist_env())
    task.build_model()
    return task


def _batch(task, count, step=0):
    """Samples 0 .. count - 1 of ``task``'s training data at ``step``, collated."""
    dataset = task.data(int(task.cfg.train.micro_batch)).dataset
    return collate([dataset[SampleKey(i, step)] for i in range(count)])


def test_per_scene_context_files(tmp_path):
    from video4d.text_context import save_context

    save_context(str(tmp_path / "empty.safetensors"), torch.full((2, 32), -1.0))
    task = _task(tmp_path, "data.num_scenes=2", f"text.context_root={tmp_path / 'ctx'}",
                 f"text.empty_context_file={tmp_path / 'empty.safetensors'}")
    batch = _batch(task, 2)
    names = batch["scenes"]
    assert names[0] != names[1]
    for i, scene in enumerate(names):  # contexts are read lazily, once per scene
        save_context(str(tmp_path / "ctx" / f"{scene}.safetensors"), torch.full((3, 32), float(i + 1)))
    ctx = task.context(batch, torch.device("cpu"))
    assert ctx.shape == (2, 8, 32) and [float(ctx[i, 0, 0]) for i in range(2)] == [1.0, 2.0] and not ctx[:, 3:].any()
    dropped = task.texts([{"scene": names[0]}] * 400, torch.Generator().manual_seed(0))
    assert abs(float((dropped[:, 0, 0] == -1).float().mean()) - 0.1) < 0.04  # default dropout 0.1 to the empty file
    loss, stats = task.loss(task_model(task), batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and task.batch_size_and_tokens(batch) == (2, 2 * 2 * 2 * 1 * 1)


def test_a_dit_whose_latent_width_does_not_fit_the_vae_fails_before_it_loads(tmp_path, monkeypatch):
    import video4d

    monkeypatch.setattr(video4d, "load_dit", lambda *a, **k: pytest.fail("the DiT was loaded"))
    with pytest.raises(ValueError, match=r"in_dim/out_dim \(32/16\) must equal the VAE's z_dim 16.*model.in_dim=16"):
        _task(tmp_path, "+model.in_dim=32")


def task_model(task):
    from video4d import load_dit

    return load_dit("tiny", init="random")


def test_base_pretraining_config_runs_with_captions_and_exports_a_loadable_dit(tmp_path):
    from video4d import load_dit

    overrides = ["vae.config=tiny", "vae.weights=null", "data.encoded=null", "data.height=32", "data.width=32",
                 "data.num_scenes=2", "schedule.frames=[[0,5]]", "train.steps=1", "train.micro_batch=2", "train.checkpoint_every=0"]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train_dit_base", overrides=overrides)
    assert cfg.data.views == 1 and cfg.model.trainable == ["*"] and cfg.reference.probs.none == 1.0
    tasks = []
    result = run_task(cfg, lambda env: tasks.append(VideoTask(cfg, env)) or tasks[0], str(tmp_path))
    assert result.step == 1
    task = tasks[0]
    batch = _batch(task, 2)
    assert batch["frames"].shape[1] == 1 and all(c.startswith("a") or c.startswith("an") for c in batch["captions"])
    ctx = task.context(batch, torch.device("cpu"))
    assert not torch.equal(ctx[0], ctx[1]) and bool(task.texts.empty.any())  # per-caption contexts; "" is not zeros
    model = load_dit(weights=str(tmp_path / "export" / "model.safetensors"))
    assert model.config.dim == 128 and model.config.text_len == 32 and model.config.reference_mode == "paper"
