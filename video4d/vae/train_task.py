"""Training the Wan2.1-architecture VAE from scratch: a task for the generic loop (:class:`fourd.train.loop.Task`).

Data: single-view procedural clips (:class:`fourd.data.procedural.ProceduralSource`, training
seeds) of ``F = 4k + 1`` frames, ``F`` following the step schedule ``data.frames`` (images first,
then videos, as Wan's VAE is trained), optionally randomly cropped to ``crop x crop`` pixels. A
batch is ``videos [B, 3, F, h, w]`` in [-1, 1].

Loss (reconstructions ``x_hat`` decoded from ``z = mu + sigma * eps``, the posterior sample)::

    l1_weight * |x_hat - x| + mse_weight * (x_hat - x)^2 + lpips_weight * LPIPS(x_hat, x)
        + kl_weight * KL(N(mu, sigma^2) || N(0, 1))

every term a mean (pixels, or latent elements for the KL); LPIPS runs per frame and only with
``loss.lpips_weight > 0`` (its backbone from ``loss.lpips_weights``, :func:`fourd.metrics.build_lpips`).

Export: the weights in the official key layout plus ``vae_config`` metadata, the JSON of the
:class:`~video4d.vae.config.VAEConfig` fields whose ``latents_mean`` / ``latents_std`` are the
per-channel statistics of the posterior means over ``stats.num_clips`` training clips, so
normalised latents have zero mean and unit variance (as Wan2.1's published constants do for it).
:func:`evaluate_vae` measures held-out reconstruction PSNR against trivial baselines.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as nnf
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset
from torchvision.utils import make_grid, save_image

from fourd.data.loader import SampleKey, TaskData
from fourd.data.procedural import ProceduralSource
from fourd.metrics import psnr
from fourd.sharded import Placement
from fourd.train.distributed import DistEnv
from fourd.train.schedule import StepSchedule
from video4d.vae.causal import CausalCache
from video4d.vae.config import resolve_config
from video4d.vae.model import WanVAE

__all__ = ["TrainableVAE", "VAETask", "latent_statistics", "evaluate_vae", "reconstruction_grid", "exported_vae", "train_and_evaluate"]

log = logging.getLogger(__name__)


class TrainableVAE(WanVAE):
    """:class:`WanVAE` with a training forward (same ``state_dict`` keys, so exports load with ``load_vae``)."""

    def forward(self, videos: torch.Tensor, noise: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Videos ``[N, 3, F, H, W]`` in [-1, 1] -> (reconstruction ``[N, 3, F, H, W]`` (unclamped),
        posterior mean and log-variance ``[N, z_dim, T', H/8, W/8]``). ``noise`` (same shape as the
        mean) samples ``z = mu + exp(logvar / 2) * noise``; None decodes the mean."""
        mean, logvar = self.conv1(self.encoder(videos.to(self.dtype), CausalCache())).chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return self.decoder(self.conv2(z), CausalCache()), mean, logvar


def _source(data: DictConfig, split: str) -> ProceduralSource:
    return ProceduralSource(views=1, height=data.height, width=data.width, split=split, seed=data.seed,
                            moving_camera_fraction=data.moving_camera_fraction, fps=data.fps)


def _clips(source: ProceduralSource, start: int, count: int, frames: int) -> torch.Tensor:
    """``count`` clips from sample ``start`` on: ``[count, 3, F, H, W]`` in [-1, 1]."""
    return torch.stack([source.sample(start + i, frames)["frames"][0].transpose(0, 1) for i in range(count)]) * 2 - 1


class _Clips(Dataset):
    """Training clips by :class:`fourd.data.loader.SampleKey`: clip ``key.index`` of ``source`` at
    ``frames(key.step)`` frames, ``[3, F, h, w]`` in [-1, 1], cropped to ``crop`` at a position drawn
    from ``(seed, index)``."""

    def __init__(self, source: ProceduralSource, frames: StepSchedule, crop: Optional[int], seed: int):
        self.source, self.frames, self.crop, self.seed = source, frames, crop, seed

    def __getitem__(self, key: SampleKey) -> torch.Tensor:
        clip = _clips(self.source, key.index, 1, int(self.frames(key.step)))[0]
        if self.crop is not None:
            y, x = np.random.default_rng([self.seed, key.index]).integers(0, [clip.shape[-2] - self.crop + 1, clip.shape[-1] - self.crop + 1])
            clip = clip[..., y : y + self.crop, x : x + self.crop]
        return clip


@torch.no_grad()
def latent_statistics(vae: WanVAE, videos: torch.Tensor, batch: int = 8) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the raw posterior means of ``videos [N, 3, F, H, W]`` in [-1, 1]
    (over clips, latent frames and positions): the ``latents_mean`` / ``latents_std`` that make
    :meth:`WanVAE.encode`'s normalised latents zero-mean, unit-variance on this data."""
    mu = torch.cat([vae.encode_videos(videos[i : i + batch], chunk_frames=None) for i in range(0, len(videos), batch)])
    flat = mu.transpose(0, 1).flatten(1).double()  # [z_dim, N * T' * h * w]
    return flat.mean(1).tolist(), flat.std(1).clamp_min(1e-6).tolist()


class VAETask:
    """Training task of the VAE; ``cfg`` is the composed config of ``configs/train_vae.yaml``
    (vae, data, loss, stats nodes)."""

    def __init__(self, cfg: DictConfig, env: DistEnv):
        self.cfg, self.env = cfg, env
        vae_cfg = OmegaConf.to_container(cfg.vae, resolve=True)
        self.init_seed = vae_cfg.pop("init_seed")
        self.init_logvar = vae_cfg.pop("init_logvar")
        self.init = vae_cfg.pop("init")
        self.init_weights = vae_cfg.pop("weights", None)
        self.weights_match = vae_cfg.pop("weights_match", "all")
        if self.weights_match not in ("all", "shape"):
            raise ValueError(f"vae.weights_match must be 'all' (same architecture) or 'shape' (warm-start another one), got {self.weights_match!r}")
        if self.init not in ("fan_in", "torch"):
            raise ValueError(f"vae.init must be 'fan_in' or 'torch', got {self.init!r}")
        self.config = resolve_config(vae_cfg)
        factor = self.config.temporal_factor
        self.frames_schedule = StepSchedule(OmegaConf.to_container(cfg.data.frames))
        bad = [f for _, f in self.frames_schedule.points if (f - 1) % factor]
        if bad:
            raise ValueError(f"data.frames values must be {factor}k+1 (1, {factor + 1}, {2 * factor + 1}, ...), got {bad}")
        self.num_frames = self.frames_schedule(0)
        self.eval_frames = max(f for _, f in self.frames_schedule.points)
        crop = cfg.data.crop
        if crop is not None and (crop % self.config.spatial_factor or crop > min(cfg.data.height, cfg.data.width)):
            raise ValueError(f"data.crop must be a multiple of {self.config.spatial_factor} no larger than the frames, got {crop}")
        self.source = _source(cfg.data, "train")
        self.model: Optional[TrainableVAE] = None
        self.lpips: Optional[nn.Module] = None
        if cfg.loss.lpips_weight > 0:
            from fourd.metrics import build_lpips

            self.lpips = build_lpips(cfg.loss.lpips_net, cfg.loss.lpips_weights, random_backbone=cfg.loss.lpips_random_backbone)

    def build_model(self, placement: Optional[Placement] = None) -> nn.Module:
        """A randomly initialised :class:`TrainableVAE` (seed ``vae.init_seed``), every parameter trainable.
        The VAE is small: it is built whole in fp32 on this rank's device whatever the ``placement``
        (a ZeRO engine partitions it when it takes it over).

        ``vae.init="fan_in"``: every convolution gets normal weights of std ``1 / sqrt(fan_in)`` and
        zero biases (variance preserving). With torch's default init (``"torch"``) each conv shrinks
        the signal ~3x while its biases add constants, so the channel RMS norms leave a nearly
        input-independent decoder output (measured: output std over a batch 0.01 vs 0.08 with
        ``fan_in``) and training stalls at the data set's mean image (~18 dB). The posterior
        log-variance starts at ``vae.init_logvar`` (the bias of its half of ``conv1``), so the
        untrained decoder is not fed noise that swamps the small initial means. ``vae.weights`` (an
        export of the same architecture) replaces the init: training continues from it. With
        ``vae.weights_match="shape"`` the export may be of another architecture (more latent
        channels, less temporal compression): tensors whose name and shape match are loaded, the
        others keep the init, and both lists are logged by name."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed)
            self.model = TrainableVAE(self.config).to(self.env.device).train()
            if self.init == "fan_in":
                for module in self.model.modules():
                    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                        nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
                        nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.model.conv1.bias[self.config.z_dim :] = self.init_logvar
        if self.init_weights:  # continue training an export (its latent statistics are re-measured at export)
            from fourd.weights import load_into, read_state_dict

            state = read_state_dict(self.init_weights, "vae.weights")
            missing, unexpected = load_into(self.model, state, strict=self.weights_match == "all", source=self.init_weights)
            if self.env.is_main and self.weights_match == "shape":
                own = self.model.state_dict()
                reshaped = sorted(k for k, v in state.items() if k in own and v.shape != own[k].shape)
                log.info("vae.weights %s: %d of %d tensors loaded; kept the init for %s (absent) and %s (other shape); "
                         "unused: %s", self.init_weights, len(own) - len(missing) - len(reshaped), len(own),
                         missing or "none", reshaped or "none", unexpected or "none")
        if self.lpips is not None:
            self.lpips = self.lpips.to(self.env.device)
        if self.env.is_main:
            log.info("VAE: %s parameters", f"{sum(p.numel() for p in self.model.parameters()):,}")
        return self.model

    def on_step(self, step: int) -> None:
        """Frames per clip at optimizer step ``step`` (``data.frames`` schedule)."""
        self.num_frames = int(self.frames_schedule(step))

    def data(self, micro_batch: int) -> TaskData:
        """Clip ``i`` (:class:`fourd.data.loader.SampleKey` index) of the training source at the
        schedule's length for its step, randomly cropped with ``data.crop``; batches ``[B, 3, F, h, w]`` in [-1, 1]."""
        return TaskData(_Clips(self.source, self.frames_schedule, self.cfg.data.crop, self.cfg.data.seed), torch.stack)

    def loss(self, model, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted reconstruction + KL loss of ``batch`` (posterior noise from ``generator``)."""
        c, s = self.config, self.config.spatial_factor
        N, _, F, H, W = batch.shape
        noise = torch.randn((N, c.z_dim, (F - 1) // c.temporal_factor + 1, H // s, W // s), generator=generator, device=batch.device)
        recon, mean, logvar = model(batch, noise)
        recon = recon.float()
        w = self.cfg.loss
        l1 = (recon - batch).abs().mean()
        mse = (recon - batch).pow(2).mean()
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).mean()
        total = w.l1_weight * l1 + w.mse_weight * mse + w.kl_weight * kl
        stats = {"l1": float(l1.detach()), "mse": float(mse.detach()), "kl": float(kl.detach()), "psnr": float(10 * torch.log10(4.0 / mse.detach()))}
        if self.lpips is not None:
            frames = lambda v: v.transpose(1, 2).flatten(0, 1)  # [N, 3, F, H, W] -> [N * F, 3, H, W]
            perceptual = self.lpips(frames(recon), frames(batch)).mean()
            total = total + w.lpips_weight * perceptual
            stats["lpips"] = float(perceptual)
        return total, stats

    def batch_size_and_tokens(self, batch: torch.Tensor) -> tuple[int, int]:
        """Clips and pixels (``F * h * w`` per clip) in ``batch``."""
        N, _, F, H, W = batch.shape
        return N, N * F * H * W

    def preview(self, model: nn.Module, step: int) -> Optional[torch.Tensor]:
        """Ground truth over reconstruction of two held-out clips (:func:`reconstruction_grid`)."""
        return reconstruction_grid(model, _clips(_source(self.cfg.data, "held_out"), 0, 2, self.eval_frames))

    def export_metadata(self) -> dict[str, str]:
        """``vae_config``: the :class:`VAEConfig` fields as JSON, ``latents_mean`` / ``latents_std``
        measured on ``stats.num_clips`` full-size training clips of the schedule's longest length
        (starting at sample ``stats.start``)."""
        model = self.model.eval()
        videos = _clips(self.source, self.cfg.stats.start, self.cfg.stats.num_clips, self.eval_frames).to(self.env.device)
        mean, std = latent_statistics(model, videos)
        model.train()
        config = dataclasses.replace(self.config, latents_mean=tuple(mean), latents_std=tuple(std))
        log.info("latent statistics over %d clips: mean %s std %s", len(videos), [round(m, 3) for m in mean], [round(s, 3) for s in std])
        return {"vae_config": json.dumps(dataclasses.asdict(config))}


@torch.no_grad()
def reconstruction_grid(vae: WanVAE, videos: torch.Tensor, max_frames: int = 9) -> torch.Tensor:
    """Image grid ``[3, H', W']`` in [0, 1]: for each clip of ``videos [N, 3, F, H, W]`` (in [-1, 1])
    a row of ground-truth frames above a row of ``decode(encode(x))`` frames (first ``max_frames``)."""
    recon = vae.decode_videos(vae.encode_videos(videos, chunk_frames=None), chunk_latents=None)
    rows = torch.stack([videos, recon], 1)[:, :, :, :max_frames]  # [N, 2, 3, F', H, W]
    F = rows.shape[3]
    images = rows.permute(0, 1, 3, 2, 4, 5).flatten(0, 2)  # [(N 2 F'), 3, H, W]
    return make_grid(((images + 1) / 2).clamp(0, 1).float().cpu(), nrow=F, padding=1, pad_value=1.0)


@torch.no_grad()
def evaluate_vae(vae: WanVAE, cfg: DictConfig, out_dir: Optional[str] = None) -> dict[str, Any]:
    """Held-out reconstruction quality of ``vae`` on ``eval.num_clips`` procedural clips of held-out
    seeds (``cfg`` is the ``train_vae`` config; full-size frames, the longest ``data.frames`` length).

    Returns (and, with ``out_dir``, writes ``eval.json`` and ``recon.png``) the mean per-frame PSNR
    (dB, frames in [0, 1]) of ``decode(encode(x))`` and of two trivial baselines: each clip's mean
    colour, and an 8x box-downsampled then bilinearly upsampled copy (the information of a
    latent-sized image with 3 channels); plus the mean / std of the normalised latents.
    """
    vae = vae.eval()
    frames = max(int(f) for _, f in cfg.data.frames)
    videos = _clips(_source(cfg.data, "held_out"), 0, cfg.eval.num_clips, frames)
    z = torch.cat([vae.encode_videos(videos[i : i + 4], chunk_frames=None) for i in range(0, len(videos), 4)])
    recon = torch.cat([vae.decode_videos(z[i : i + 4], chunk_latents=None) for i in range(0, len(z), 4)])
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    normalised = (z - mean) / std
    frames = lambda v: ((v.transpose(1, 2).flatten(0, 1) + 1) / 2).clamp(0, 1)  # [N, 3, F, H, W] -> [N*F, 3, H, W] in [0, 1]
    x = frames(videos)
    factor = vae.config.spatial_factor
    blurred = nnf.interpolate(nnf.avg_pool2d(x, factor), size=x.shape[-2:], mode="bilinear", align_corners=False)
    clip_mean = frames(videos.mean(dim=(2, 3, 4), keepdim=True).expand_as(videos))
    result = {
        "clips": len(videos), "frames_per_clip": videos.shape[2], "height": videos.shape[3], "width": videos.shape[4],
        "psnr_vae": float(psnr(frames(recon), x).mean()),
        "psnr_blur8x": float(psnr(blurred, x).mean()),
        "psnr_clip_mean_colour": float(psnr(clip_mean, x).mean()),
        "normalised_latent_mean": float(normalised.mean()), "normalised_latent_std": float(normalised.std()),
        "normalised_latent_std_per_channel": [round(float(s), 4) for s in normalised.transpose(0, 1).flatten(1).std(1)],
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "eval.json"), "w") as f:
            json.dump(result, f, indent=1)
        save_image(reconstruction_grid(vae, videos[: cfg.eval.grid_clips]), os.path.join(out_dir, "recon.png"))
    return result


def exported_vae(weights: str, device: str = "cpu") -> WanVAE:
    """The VAE of an export: config from its ``vae_config`` safetensors metadata, then :func:`load_vae`."""
    from fourd.weights import read_metadata
    from video4d.vae.loading import load_vae

    metadata = read_metadata(weights, what="exported VAE weights")
    if "vae_config" not in metadata:
        raise ValueError(f"{weights} has no vae_config metadata; export it with launch/train_vae.py")
    return load_vae(json.loads(metadata["vae_config"]), weights=weights, device=device)


def train_and_evaluate(cfg: DictConfig, run_dir: str) -> dict[str, Any]:
    """``mode=train``: train (:class:`VAETask` through :func:`fourd.train.hydra_app.run_task`), export,
    (run_task publishes it to ``publish_to`` when set) and evaluate it into ``<run_dir>/eval``;
    ``mode=eval``: evaluate ``vae_weights``. Returns the evaluation (:func:`evaluate_vae`; empty on ranks > 0)."""
    from fourd.train.distributed import dist_env
    from fourd.train.hydra_app import run_task

    if cfg.mode == "eval":
        if not cfg.vae_weights:
            raise ValueError("mode=eval needs vae_weights=<exported vae .safetensors>")
        weights = cfg.vae_weights
    elif cfg.mode == "train":
        result = run_task(cfg, lambda env: VAETask(cfg, env), run_dir)
        if not dist_env().is_main:
            return {}
        full = [p for p in result.exports if p.endswith("model.safetensors")]
        if not full:
            raise ValueError("train_vae needs train.export=full to export and evaluate the VAE")
        weights = full[0]
    else:
        raise ValueError(f"unknown mode {cfg.mode!r}; use 'train' or 'eval'")
    result = evaluate_vae(exported_vae(weights), cfg, os.path.join(run_dir, "eval"))
    log.info("held-out reconstruction PSNR %.2f dB (blur 8x %.2f dB, clip mean colour %.2f dB)",
             result["psnr_vae"], result["psnr_blur8x"], result["psnr_clip_mean_colour"])
    return result
