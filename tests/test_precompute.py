"""Captions end to end and the pre-encoding job: disk scenes' captions (scene.json, <video>.txt) reach
the text encoder during training; launch/precompute.py's latents and contexts give the same losses as
the raw data for the same draws, without decoding a frame or loading the text encoder; sharding by
rank, restart after a crash, and the errors of a stale or missing index."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import fsspec
import imageio.v3 as iio
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fourd.data import generate_scene, write_scene
from fourd.data.procedural import procedural_scene
from fourd.train.distributed import DistEnv
from fourd.train.hydra_app import run_task
from video4d.precompute import precompute
from video4d.text_context import pad_contexts
from video4d.train_task import VideoTask

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Captioned scenes: 2 multi-view (scene.json captions), 1 static, 1 plain video with <video>.txt."""
    root = tmp_path_factory.mktemp("scenes")
    captions = {}
    for seed in (3, 4):
        s = procedural_scene(seed, 2, 11, 24, 16, "dynamic")  # portrait 24x16, centre-cropped to 16x16
        write_scene(s, str(root / "mv" / s.name))
        captions[s.name] = s.caption
    s = generate_scene(7, num_views=1, num_frames=4, height=16, width=16, kind="static")
    s.caption = "a quiet room . the camera orbits"
    write_scene(s, str(root / "static" / s.name))
    captions[s.name] = s.caption
    clip = procedural_scene(9, 1, 11, 16, 16, "monocular")
    (root / "videos").mkdir()
    frames = (clip.frames[0].permute(0, 2, 3, 1) * 255).round().byte().numpy()
    iio.imwrite(root / "videos" / "clip.mp4", frames, plugin="FFMPEG", fps=8, macro_block_size=1)
    (root / "videos" / "clip.txt").write_text(clip.caption + "\n")
    captions["clip"] = clip.caption
    return root, captions


def _cfg(scenes_root, *overrides, encoded=None):
    base = ["launcher=plain", "data=mixture", "data.views=2", "data.height=16", "data.width=16", "schedule.frames=[[0,5]]",
            "+model.text_len=32", "+text_encoder@text.encoder=tiny", "train.steps=3", "train.micro_batch=2", "train.checkpoint_every=0",
            "train.export=none", "train.progress=false", "optim.warmup_steps=1"]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train_video4d", overrides=[*base, *overrides])
    cfg.data.sources = {
        "objects_4d": {"type": "multiview", "scenes": str(scenes_root / "mv"), "ratio": 0.5, "window": "chunks"},
        "homography_video": {"type": "homography", "scenes": str(scenes_root / "videos"), "ratio": 0.25, "window": "chunks", "variants": 2},
        "static": {"type": "static", "scenes": str(scenes_root / "static"), "ratio": 0.25},
    }
    cfg.data.encoded = encoded
    return cfg


class _Recording(VideoTask):
    """Records (captions, contexts) of every batch it trains on."""

    seen: list = []

    def context(self, batch, device, generator=None):
        ctx = super().context(batch, device, generator)
        grid = batch["frames"].shape[-2:] if "frames" in batch else tuple(8 * n for n in batch["latents"].shape[-2:])
        self.seen.append((list(batch["captions"]), ctx.detach().clone(), tuple(grid)))
        return ctx


def _train(cfg, run_dir):
    _Recording.seen = []
    return run_task(cfg, lambda env: _Recording(cfg, env), str(run_dir)).losses


def test_disk_captions_reach_the_text_encoder_in_training(scenes, tmp_path):
    root, captions = scenes
    cfg = _cfg(root, "text.dropout=0.0", "train.steps=4")
    _train(cfg, tmp_path / "run")
    from video4d import load_text_encoder

    encoder = load_text_encoder(**OmegaConf.to_container(cfg.text.encoder, resolve=True))
    seen = {}
    for names, ctx, _ in _Recording.seen:
        for caption, c in zip(names, ctx):
            assert caption in captions.values()  # every sample carries its scene's caption
            with torch.no_grad():
                torch.testing.assert_close(c, pad_contexts(encoder.encode([caption]), 32)[0])
            seen[caption] = c
    assert len(seen) >= 2
    values = list(seen.values())
    assert all(not torch.equal(a, b) for i, a in enumerate(values) for b in values[i + 1:])  # contexts differ per caption


BUCKETS = "data.buckets=[[2,5,16,16],[2,5,32,16]]"  # square, and portrait for the 24x16 multi-view scenes


def test_pre_encoded_training_equals_raw_and_decodes_nothing(scenes, tmp_path, monkeypatch):
    root, captions = scenes
    encoded = str(tmp_path / "enc")
    summary = precompute(_cfg(root, BUCKETS, encoded=encoded), DistEnv())
    assert summary == {"scenes": 4, "encoded": 4, "skipped": 0}
    index = json.loads((tmp_path / "enc" / "index.json").read_text())
    assert index["sources"]["homography_video"][0]["caption"] == captions["clip"]  # <video>.txt
    assert index["sources"]["objects_4d"][0]["clips"]["5"] == {"grid": [2, 5, 32, 16], "windows": 2, "variants": 1}
    assert index["sources"]["static"][0]["clips"]["5"]["grid"] == [2, 5, 16, 16]
    raw = _train(_cfg(root, BUCKETS), tmp_path / "raw")
    assert {grid for _, _, grid in _Recording.seen} == {(16, 16), (32, 16)}  # both buckets drawn, one per micro-batch

    import fourd.data.datasets
    import video4d

    def refuse(*args, **kwargs):
        raise AssertionError("pre-encoded training decoded a scene or loaded the text encoder")

    monkeypatch.setattr(fourd.data.datasets, "open_scene", refuse)
    monkeypatch.setattr(video4d, "load_text_encoder", refuse, raising=False)
    got = _train(_cfg(root, BUCKETS, encoded=encoded), tmp_path / "encoded")
    assert sorted(got) == [1, 2, 3]
    assert [got[s] for s in (1, 2, 3)] == pytest.approx([raw[s] for s in (1, 2, 3)], rel=1e-5, abs=1e-7)
    monkeypatch.undo()

    stale = _cfg(root, BUCKETS, encoded=encoded)
    OmegaConf.update(stale, "data.sources.objects_4d.frame_stride", 2, force_add=True)
    with pytest.raises(ValueError, match=r"data.sources.objects_4d.frame_stride \(index: None, config: 2\)"):
        VideoTask(stale, DistEnv())
    with pytest.raises(FileNotFoundError, match="has no index.json: run launch/precompute.py"):
        VideoTask(_cfg(root, BUCKETS, encoded=str(tmp_path / "nothing")), DistEnv())

    # sharded over 2 ranks (rank 1, then rank 0 which writes the index): the same index
    sharded = str(tmp_path / "sharded")
    assert precompute(_cfg(root, BUCKETS, encoded=sharded), DistEnv(rank=1, world_size=2))["encoded"] == 2
    assert precompute(_cfg(root, BUCKETS, encoded=sharded), DistEnv(rank=0, world_size=2))["encoded"] == 2
    assert json.loads((tmp_path / "sharded" / "index.json").read_text()) == index
    # a crash mid-job (a scene without its part file; no index): the rerun encodes only that scene
    os.remove(tmp_path / "sharded" / "index.json")
    os.remove(tmp_path / "sharded" / "parts" / "static" / "000000.json")
    assert precompute(_cfg(root, BUCKETS, encoded=sharded), DistEnv())["encoded"] == 1
    assert json.loads((tmp_path / "sharded" / "index.json").read_text()) == index
    stale = tmp_path / "sharded" / "parts" / "objects_4d" / "000001.json"  # a part of another scene (the root changed)
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "url": "elsewhere"}))
    assert precompute(_cfg(root, BUCKETS, encoded=sharded), DistEnv())["encoded"] == 1
    assert json.loads((tmp_path / "sharded" / "index.json").read_text()) == index


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_torchrun_precompute_of_procedural_data_then_training_on_it(tmp_path):
    """The launcher on 2 ranks for the base-model config (procedural clips, captions), then a training
    step on the result."""
    encoded = tmp_path / "enc"
    common = ["vae.config=tiny", "vae.weights=null", "data.height=32", "data.width=32", "data.num_scenes=3", f"data.encoded={encoded}",
              "train.loader.workers=0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), RUN_DIR=str(tmp_path / "run"))
    env.pop("RUN_STAMP", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _port(),
                           str(ROOT / "launch" / "precompute.py"), "--config-name", "train_dit_base", *common],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 of 3 scenes encoded" in proc.stdout and "1 of 3 scenes encoded" in proc.stdout
    index = json.loads((encoded / "index.json").read_text())
    assert [r["kind"] for r in index["sources"]["procedural"]] == ["monocular"] * 3 and index["contexts"]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train_dit_base", overrides=[*common, "train.steps=1", "train.micro_batch=2", "train.checkpoint_every=0",
                                                              "train.export=none"])
    tasks = []
    result = run_task(cfg, lambda e: tasks.append(VideoTask(cfg, e)) or tasks[0], str(tmp_path / "train"))
    assert result.step == 1 and tasks[0].texts.encoder is None  # contexts from the index
    fs, _ = fsspec.core.url_to_fs(str(encoded))
    assert len(fs.ls(str(encoded / "latents"))) == 3
