"""The video model's training task for the generic loop (:class:`fourd.train.loop.Task`).

Builds the DiT (``video4d.load_dit``, trainable parameters by pattern), the frozen VAE, the text
contexts and the data (:mod:`video4d.data`); a batch is ``frames [B, V, F, 3, H, W]`` in [0, 1] (F = 4k + 1 frames)
encoded to latents ``x0 [B, V, T, z_dim, H/s, W/s]`` (VAE factors: T = (F - 1)/4 + 1 and s = 8 for Wan2.1's; with ``data.encoded`` the batch
holds the latents and text contexts pre-encoded by ``launch/precompute.py``); the loss is the rectified-flow MSE of
:func:`video4d.flow.flow_matching_loss` over the non-reference cells. Per sample (from the loss
generator, so resume is exact): which references it gets (``reference.probs``: both / row / column
/ none; samples flagged ``drop_freeze_time_frame_cond``, e.g. static scenes, lose what
``reference.drop`` names, as in the paper's App. B) and whether its caption is dropped to the empty
prompt (``text.dropout``, for CFG).

Progressive schedule: ``schedule.frames`` (``[[step, frames], ...]``) sets the clip length F from
that step on; every sample's length follows from the step it is read for
(:class:`fourd.data.loader.SampleKey`), so the loader's workers prefetch across a switch.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchvision.utils import make_grid

from fourd.data.loader import TaskData
from fourd.sharded import Placement
from fourd.train.distributed import DistEnv
from fourd.train.schedule import StepSchedule
from video4d.data import VideoBatch, VideoSamples, build_source, collate
from video4d.encoded import module_hash
from video4d.flow import ReferenceChoice, TimestepSampling, build_reference, flow_matching_loss
from video4d.grid import TRAINED_GRID_KEY, ReferenceCells
from video4d.sampler import sample
from video4d.text_context import CaptionContexts

__all__ = ["LOADER_KEYS", "VideoTask"]

LOADER_KEYS = ("weights", "trainable", "init", "init_seed")  # model.* keys that configure loading, not the DiTConfig
log = logging.getLogger(__name__)


class VideoTask:
    """Training task of the 4D video DiT; ``cfg`` is the composed Hydra config (model, vae, text,
    data, schedule, flow, reference, preview nodes; see ``configs/train_video4d.yaml``).

    With ``env.sequence_parallel`` = N > 1 the DiT splits each sample's tokens over the N ranks of
    a sequence-parallel group (:meth:`video4d.model.WanDiT4D.set_sequence_parallel`); those ranks
    read the same samples (data by data-parallel rank) and draw the same references, caption
    dropout and noise (the loop seeds by data-parallel rank), so their loss and loss mask agree."""

    supports_sequence_parallel = True

    def __init__(self, cfg: DictConfig, env: DistEnv):
        self.cfg, self.env = cfg, env
        self.frames_schedule = StepSchedule(OmegaConf.to_container(cfg.schedule.frames))
        self.num_frames = self.frames_schedule(0)
        self.source = build_source(cfg.data, [f for _, f in self.frames_schedule.points], int(cfg.train.micro_batch))
        self.sampling = TimestepSampling(**OmegaConf.to_container(cfg.flow.timestep))
        probs = OmegaConf.to_container(cfg.reference.probs)
        self.choice = ReferenceChoice(**probs, view=cfg.reference.view, time=cfg.reference.time)
        self.cells = ReferenceCells(view=cfg.reference.view, time=cfg.reference.time)
        self.vae: Optional[nn.Module] = None
        self.texts: Optional[CaptionContexts] = None
        self._dit_config: dict[str, Any] = {}

    # ---------------------------------------------------------------- model
    def build_model(self, placement: Optional[Placement] = None) -> nn.Module:
        """The DiT (weights from ``model.weights`` or a seeded init identical on all ranks) built as the
        engine's ``placement`` says (default: CPU, fp32; ZeRO-3: partitioned at construction, each rank
        reading its own slices of the weights), trainable parameters chosen by ``model.trainable``
        patterns, and the frozen VAE (and text encoder) on this rank's device, never partitioned."""
        from video4d import load_dit, load_vae
        from video4d.model import select_trainable
        from video4d.model.config import resolve_config

        model_cfg = OmegaConf.to_container(self.cfg.model, resolve=True)
        loader = {k: model_cfg.pop(k) for k in LOADER_KEYS}
        self._dit_config = model_cfg
        sp = self.env.sequence_parallel
        dit_config = resolve_config(model_cfg)
        if sp > 1:  # before loading: a bad size fails in a second
            from video4d.model.sequence_parallel import check_sequence_parallel

            check_sequence_parallel(sp, dit_config.num_heads)
        # the frozen VAE is small next to the DiT: loaded first, so a latent width that does not fit fails before the DiT loads
        self.vae = load_vae(self.cfg.vae.config, weights=self.cfg.vae.weights, device=self.env.device).eval().requires_grad_(False)
        z_dim = self.vae.config.z_dim
        if (dit_config.in_dim, dit_config.out_dim) != (z_dim, z_dim):
            raise ValueError(f"the DiT's in_dim/out_dim ({dit_config.in_dim}/{dit_config.out_dim}) must equal the VAE's z_dim {z_dim} "
                             f"(vae.weights={self.cfg.vae.weights}): set model.in_dim={z_dim} and model.out_dim={z_dim} (+model.* to add the keys)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(loader["init_seed"])
            model = load_dit(model_cfg, weights=loader["weights"], init=loader["init"], placement=placement)
        if sp > 1:
            from fourd.train.distributed import sequence_parallel_groups

            model.set_sequence_parallel(sequence_parallel_groups(sp).get_sequence_parallel_group())
        counts = select_trainable(model, loader["trainable"])
        self.patch, self.reference_mode = model.config.patch_size, model.config.reference_mode
        self.texts = self._build_texts(model.config.text_dim, model.config.text_len)
        if self.env.is_main:
            log.info("DiT: %s trainable / %s frozen parameters", f"{counts.trainable:,}", f"{counts.frozen:,}")
        return model

    def _build_texts(self, text_dim: int, text_len: int) -> CaptionContexts:
        """Per-sample contexts from ``text``: the text encoder ``text.encoder`` (a mapping of
        ``video4d.load_text_encoder`` arguments, or null) or precomputed files; with pre-encoded data
        that holds contexts, the samples' own (the encoder is not loaded) and the index's empty prompt."""
        t = self.cfg.text
        encoder = None
        index = getattr(self.source, "index", None)
        if index is not None:
            if index.vae != module_hash(self.vae):
                raise ValueError(f"data.encoded={index.root} was encoded with another VAE than vae.config/vae.weights "
                                 f"({self.cfg.vae.weights}); rerun launch/precompute.py with this VAE")
            if index.empty_context_url is not None:
                return CaptionContexts(text_dim, text_len, empty_file=index.empty_context_url, dropout=float(t.get("dropout", 0.0)))
        if t.get("encoder"):
            from video4d import load_text_encoder

            encoder = load_text_encoder(**OmegaConf.to_container(t.encoder, resolve=True), device=self.env.device).eval()
        return CaptionContexts(text_dim, text_len, encoder=encoder, context_root=t.get("context_root"), context_file=t.context_file,
                               empty_file=t.get("empty_context_file"), dropout=float(t.get("dropout", 0.0)))

    def export_metadata(self) -> dict[str, str]:
        """``dit_config``: the DiT config as JSON, loadable with ``video4d.load_dit(json.loads(...), weights=...)``;
        ``trained_grid`` (:data:`video4d.grid.TRAINED_GRID_KEY`): views, frames (at the last step), height, width."""
        d = self.cfg.data
        grid = {"views": d.views, "frames": int(self.frames_schedule(self.cfg.train.steps - 1)), "height": d.height, "width": d.width}
        return {"dit_config": json.dumps(self._dit_config), TRAINED_GRID_KEY: json.dumps(grid)}

    # ----------------------------------------------------------------- data
    def on_step(self, step: int) -> None:
        """Progressive temporal schedule: clip length for optimizer step ``step``."""
        self.num_frames = int(self.frames_schedule(step))

    def data(self, micro_batch: int) -> TaskData:
        """Sample ``i`` (:class:`fourd.data.loader.SampleKey` index) of the source at the clip length
        of its step; micro-batches are :class:`video4d.data.VideoBatch` es."""
        if micro_batch != int(self.cfg.train.micro_batch):
            raise ValueError(f"VideoTask: micro-batches of {micro_batch} but train.micro_batch={self.cfg.train.micro_batch} (the buckets' group size)")
        return TaskData(VideoSamples(self.source, self.frames_schedule), collate)

    # ----------------------------------------------------------------- loss
    def context(self, batch: VideoBatch, device: torch.device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Text contexts ``[B, text_len, text_dim]`` of the batch's samples (captions dropped to the
        empty prompt with probability ``text.dropout`` when a ``generator`` is given)."""
        contexts = batch.get("contexts") or [None] * len(batch["scenes"])
        samples = [{"scene": s, "caption": c, "context": x} for s, c, x in zip(batch["scenes"], batch["captions"], contexts)]
        return self.texts(samples, generator, device)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, V, F, 3, H, W]`` -> latents ``[B, V, T, z_dim, H/s, W/s]`` with the frozen VAE (fp32,
        outside autocast)."""
        with torch.no_grad(), torch.autocast(frames.device.type, enabled=False):
            return self.vae.encode(frames.float(), max_videos=self.cfg.vae.max_videos).to(frames.device)

    def loss(self, model, batch: VideoBatch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Rectified-flow loss of ``batch`` (reference choice, caption dropout, noise and timesteps
        from ``generator``)."""
        x0 = batch["latents"] if "latents" in batch else self.encode(batch["frames"])
        cells = self.choice.draw(x0.shape[0], generator)
        reference = build_reference(x0, cells, static=batch["drop_time_ref"].to(x0.device), static_drop=self.cfg.reference.drop)
        context = self.context(batch, x0.device, generator)
        loss, stats = flow_matching_loss(model, x0, context, reference, generator, self.sampling, reference_mode=self.reference_mode)
        return loss, {k: float(v) for k, v in stats.items()}

    def batch_size_and_tokens(self, batch: VideoBatch) -> tuple[int, int]:
        """Samples and DiT tokens (``V * T * (H/s/ph) * (W/s/pw)`` per sample, ``s`` the VAE's spatial factor) in ``batch``."""
        if "latents" in batch:
            B, V, T, _, h, w = batch["latents"].shape
            return B, B * V * T * (h // self.patch[1]) * (w // self.patch[2])
        B, V, F, _, H, W = batch["frames"].shape
        c = self.vae.config
        T, s = (F - 1) // c.temporal_factor + 1, c.spatial_factor
        return B, B * V * T * (H // s // self.patch[1]) * (W // s // self.patch[2])

    # -------------------------------------------------------------- preview
    def preview(self, model: nn.Module, step: int) -> Optional[torch.Tensor]:
        """Sample data item ``preview.index`` with ``preview.steps`` Euler steps from its caption and its
        references (fixed-view row and freeze-time column; none when V = 1) and
        decode it: an image grid ``[3, H', W']`` (top: ground truth, bottom: sample; rows = views,
        columns = every ``preview.frame_stride``-th frame)."""
        device = next(model.parameters()).device
        item = self.source.sample(self.cfg.preview.index, self.num_frames)
        if "latents" in item:  # pre-encoded data: the ground truth row is the decoded latents
            x0 = item["latents"][None].to(device)
            with torch.no_grad():
                frames = self.vae.decode(x0)
        else:
            frames = item["frames"][None].to(device)
            x0 = self.encode(frames)
        reference = build_reference(x0, self.cells) if x0.shape[1] > 1 else None
        context = self.texts([item], None, device)
        latents = sample(model, x0.shape, context, reference, steps=self.cfg.preview.steps, shift=self.cfg.preview.shift,
                         seed=self.cfg.preview.seed, reference_mode=self.reference_mode)
        with torch.no_grad():
            decoded = self.vae.decode(latents.to(device))
        stride = self.cfg.preview.frame_stride
        rows = torch.cat([frames[0, :, ::stride], decoded[0, :, ::stride].clamp(0, 1)], 0)  # [2V, F', 3, H, W]
        return make_grid(rows.flatten(0, 1).float().cpu(), nrow=rows.shape[1], padding=1)
