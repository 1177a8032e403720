"""VAE training task (video4d.vae.train_task): the loss falls on a fixed batch, the export stores
latent statistics that normalise latents to zero mean / unit variance, and the export loads with
load_vae."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fourd.train.hydra_app import compose_training
from fourd.data.loader import SampleKey
from fourd.train.distributed import DistEnv
from fourd.train.engine import OptimConfig, build_engine
from fourd.train.hydra_app import typed
from fourd.train.loop import LoopConfig, train
from fourd.weights import StateDictMismatchError, read_metadata
from video4d import load_vae
from video4d.vae.train_task import VAETask, evaluate_vae

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL = ("+vae.dim=4", "+vae.dim_mult=[1,2,2]", "+vae.temporal_downsample=[false,true]", "+vae.num_res_blocks=1",
         "data.height=16", "data.width=16", "data.crop=null", "data.frames=[[0,5]]", "stats.num_clips=6", "stats.start=100",
         "eval.num_clips=2", "eval.grid_clips=1", "train.micro_batch=2", "train.progress=false", "train.checkpoint_every=0")


def _compose(*overrides: str):
    return compose_training("train_vae", ["launcher=plain", *SMALL, *overrides])


def _task(*overrides: str) -> VAETask:
    return VAETask(_compose(*overrides), DistEnv(rank=0, world_size=1, local_rank=0))


def _batch(task: VAETask, count: int, step: int = 0) -> torch.Tensor:
    """Clips 0 .. count - 1 of the training data at ``step``, collated."""
    data = task.data(count)
    return data.collate([data.dataset[SampleKey(i, step)] for i in range(count)])


def test_loss_falls_on_a_fixed_batch():
    task = _task()
    model = task.build_model()
    batch = _batch(task, 2)
    assert batch.shape == (2, 3, 5, 16, 16) and -1.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(15):
        loss, stats = task.loss(model, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert set(stats) >= {"l1", "mse", "kl", "psnr"}
    # the KL term is the closed form for diagonal Gaussians against N(0, 1), checked on the batch
    with torch.no_grad():
        _, mean, logvar = model(batch)
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean()
        assert abs(float(kl) - task.loss(model, batch, generator)[1]["kl"]) < 1e-5
    assert sum(losses[-3:]) / 3 < 0.75 * losses[0], losses


def test_export_statistics_normalise_latents_and_the_export_loads(tmp_path):
    cfg = _compose("train.steps=2", "train.export=full")
    env = DistEnv(rank=0, world_size=1, local_rank=0)
    task = VAETask(cfg, env)
    loop = typed(LoopConfig, cfg.train)
    optim = typed(OptimConfig, cfg.optim, total_steps=loop.steps)
    result = train(task, lambda m: build_engine("plain", m, optim, device=env.device, dtype=torch.float32, micro_batch=2), loop, str(tmp_path), env)
    path = result.exports[0]
    config = json.loads(read_metadata(path)["vae_config"])
    assert config["dim"] == 4 and len(config["latents_mean"]) == config["z_dim"] == 16
    vae = load_vae(config, weights=path)
    trained = task.model.eval()
    for name, value in trained.state_dict().items():  # the file holds the trained weights, official keys
        assert torch.equal(vae.state_dict()[name], value), name
    # the statistics' own clips normalise to zero mean / unit std per channel (independent recomputation)
    clips = torch.stack([task.source.sample(100 + i, 5)["frames"] for i in range(6)])  # [6, 1, 5, 3, 16, 16]
    z = vae.encode(clips).transpose(0, 3).flatten(1)  # [16, N]: per channel
    assert z.mean(1).abs().max() < 1e-4 and (z.std(1) - 1).abs().max() < 1e-3
    # other clips come out close to it; the raw latents were not unit-variance
    other = vae.encode(torch.stack([task.source.sample(200 + i, 5)["frames"] for i in range(6)])).transpose(0, 3).flatten(1)
    raw_std = torch.tensor(config["latents_std"])
    assert (other.std(1) - 1).abs().mean() < 0.5 and (raw_std - 1).abs().mean() > 0.5
    ev = evaluate_vae(vae, cfg, str(tmp_path / "eval"))
    assert (tmp_path / "eval" / "recon.png").exists() and json.loads((tmp_path / "eval" / "eval.json").read_text()) == ev
    assert ev["psnr_blur8x"] > ev["psnr_clip_mean_colour"]
    # vae.weights: a new run starts from the export instead of its random init (a different init seed)
    warm = _task(f"vae.weights={path}", "vae.init_seed=5").build_model()
    for name, value in trained.state_dict().items():
        assert torch.equal(warm.state_dict()[name], value), name
    assert not torch.equal(_task("vae.init_seed=5").build_model().conv1.weight, trained.conv1.weight)
    # another architecture (less temporal compression, more latent channels) needs weights_match=shape
    another = ("+vae.temporal_downsample=[false,false]", "+vae.z_dim=32", f"+vae.latents_mean={[0.0] * 32}", f"+vae.latents_std={[1.0] * 32}")
    with pytest.raises(StateDictMismatchError, match="time_conv(.|\n)*conv1.weight"):
        _task(f"vae.weights={path}", *another).build_model()
    fresh = _task("vae.init_seed=5", *another).build_model().state_dict()
    partial = _task(f"vae.weights={path}", "vae.weights_match=shape", "vae.init_seed=5", *another).build_model().state_dict()
    kept = [k for k, v in fresh.items() if k in trained.state_dict() and trained.state_dict()[k].shape == v.shape]
    assert len(kept) < len(fresh) and "conv1.weight" not in kept
    for name in fresh:  # matching tensors come from the export, the others keep this run's init
        assert torch.equal(partial[name], trained.state_dict()[name] if name in kept else fresh[name]), name
    with pytest.raises(ValueError, match="weights_match"):
        _task("vae.weights_match=some")


def test_frames_schedule_switches_from_images_to_clips():
    task = _task("data.frames=[[0,1],[3,5]]", "data.crop=8")
    assert _batch(task, 2, step=2).shape == (2, 3, 1, 8, 8)  # the clip length follows the sample's step
    assert _batch(task, 1, step=3).shape == (1, 3, 5, 8, 8)


def test_fan_in_init_makes_the_untrained_vae_depend_on_its_input():
    """With torch's default conv init the decoder output is nearly the same for every input (the
    stall documented in docs/base_models.md); the variance-preserving init passes the signal on."""
    spread = {}
    for init in ("fan_in", "torch"):
        task = _task(f"vae.init={init}")
        model = task.build_model()
        batch = _batch(task, 4)
        with torch.no_grad():
            recon, _, _ = model(batch)
        assert torch.equal(model.conv1.bias[16:], torch.full((16,), -10.0))  # vae.init_logvar: the log-variance half's bias
        spread[init] = float(recon.std(0).mean() / batch.std(0).mean())  # output spread across inputs / input spread
    assert spread["fan_in"] > 0.3 and spread["torch"] < 0.1, spread
