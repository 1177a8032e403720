"""The video model's training task for the generic loop (:class:`fourd.train.loop.Task`).

Builds the DiT (``video4d.load_dit``, trainable parameters by pattern), the frozen VAE, the text
contexts and the data; a batch is ``frames [B, V, F, 3, H, W]`` in [0, 1] (F = 4k + 1 frames)
encoded to latents ``x0 [B, V, T, 16, H/8, W/8]`` (T = (F - 1)/4 + 1; with ``vae.latent_cache`` each
clip is encoded once and read back afterwards); the loss is the rectified-flow MSE of
:func:`video4d.flow.flow_matching_loss` over the non-reference cells. Per sample (from the loss
generator, so resume is exact): which references it gets (``reference.probs``: both / row / column
/ none; samples flagged ``drop_freeze_time_frame_cond``, e.g. static scenes, lose what
``reference.drop`` names, as in the paper's App. B) and whether its caption is dropped to the empty
prompt (``text.dropout``, for CFG).

Progressive schedule: ``schedule.frames`` (``[[step, frames], ...]``) sets the clip length F from
that step on. Data position: each rank reads global sample indices ``r, r + D, ...`` (r, D: its data-parallel rank and size); the
next index is its checkpointed state.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Mapping, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchvision.utils import make_grid

from fourd.data.procedural import ProceduralSource, scene_seed
from fourd.sharded import Placement
from fourd.train.distributed import DistEnv
from fourd.train.schedule import StepSchedule
from video4d.flow import ReferenceChoice, TimestepSampling, build_reference, flow_matching_loss
from video4d.grid import ReferenceCells
from video4d.sampler import sample
from video4d.text_context import CaptionContexts

__all__ = ["LOADER_KEYS", "VideoTask", "VideoBatch", "ProceduralClips", "MixtureSource", "build_source", "clip_id", "warm_latent_cache"]

LOADER_KEYS = ("weights", "trainable", "init", "init_seed")  # model.* keys that configure loading, not the DiTConfig
log = logging.getLogger(__name__)


class ProceduralClips(ProceduralSource):
    """:class:`fourd.data.procedural.ProceduralSource` that can also name a sample without rendering it
    (:meth:`describe`), so that a training run with a latent cache reads cached clips without
    rendering them again."""

    def describe(self, index: int, num_frames: int) -> dict[str, Any]:
        """What :meth:`sample` returns for ``index`` apart from the pixels: ``scene``, ``caption``,
        ``kind``, ``drop_freeze_time_frame_cond`` and ``clip`` (an id of the rendered clip: source
        settings, seed and size), all from the scene's seed."""
        seed = scene_seed(index, self.split, self.seed, self.num_scenes)
        kind = self.kind_of(seed)
        settings = f"mc{self.moving_camera_fraction}_arc{self.arc_degrees}_fps{self.fps}"
        return {"scene": f"procedural_{kind}_{seed:07d}", "kind": kind, "drop_freeze_time_frame_cond": kind == "static",
                "caption": self.caption_of(seed),
                "clip": f"procedural_{kind}_{seed:07d}/{settings}/v{self.views}_f{num_frames}_{self.height}x{self.width}"}


class MixtureSource:
    """On-disk scenes through :class:`fourd.data.MixtureDataset` (fixed ratios, seeded, resumable).

    ``sources``: ``{name: {type: multiview | homography | static, scenes: root URL or list of scene
    URLs, ratio: float, **source options}}``; every source yields ``views`` views of
    ``height x width`` pixels. Sample ``index`` is the mixture's global position ``index``; the clip
    length is set on every source before reading it (the progressive schedule).
    """

    TYPES = ("multiview", "homography", "static")

    def __init__(self, sources: Mapping[str, Mapping[str, Any]], views: int, height: int, width: int, seed: int = 0, reverse_views_prob: float = 0.5, epoch_size: Optional[int] = None):
        from fourd.data import HomographyVideoSource, MixtureDataset, MultiViewSource, StaticSceneSource

        classes = dict(zip(self.TYPES, (MultiViewSource, HomographyVideoSource, StaticSceneSource)))
        built, ratios = {}, {}
        for name, spec in sources.items():
            spec = dict(spec)
            kind, ratio = spec.pop("type"), spec.pop("ratio")
            if kind not in classes:
                raise ValueError(f"data source {name!r}: unknown type {kind!r}; use one of {', '.join(self.TYPES)}")
            built[name] = classes[kind](num_views=views, num_frames=1, size=(height, width), seed=seed, **spec)
            ratios[name] = ratio
        self.sources = built
        self.mixture = MixtureDataset(built, ratios, seed=seed, epoch_size=epoch_size, reverse_views_prob=reverse_views_prob)

    def sample(self, index: int, num_frames: int) -> dict[str, Any]:
        """Mixture position ``index`` as a clip of ``num_frames`` frames (``frames [V, F, 3, H, W]``, ...)."""
        for source in self.sources.values():
            source.num_frames = num_frames
        return self.mixture[index]


def build_source(cfg: DictConfig) -> ProceduralClips | MixtureSource:
    """The data source named by ``data.source``: ``"procedural"`` (:class:`ProceduralClips`) or ``"mixture"``."""
    if cfg.source == "procedural":
        return ProceduralClips(cfg.views, cfg.height, cfg.width, split=cfg.split, seed=cfg.seed, num_scenes=cfg.num_scenes,
                               static_fraction=cfg.static_fraction, moving_camera_fraction=cfg.moving_camera_fraction,
                               homography_fraction=cfg.homography_fraction)
    if cfg.source == "mixture":
        sources = OmegaConf.to_container(cfg.sources, resolve=True)
        return MixtureSource(sources, cfg.views, cfg.height, cfg.width, cfg.seed, cfg.reverse_views_prob, cfg.epoch_size)
    raise ValueError(f"unknown data.source {cfg.source!r}; use 'procedural' or 'mixture'")


class VideoBatch(dict):
    """One micro-batch: ``frames`` ``[B, V, F, 3, H, W]`` in [0, 1] (or, with ``vae.latent_cache``,
    ``latents`` ``[B, V, T, 16, H/8, W/8]``), ``drop_time_ref`` bool ``[B]``, ``scenes`` (names),
    ``kinds``, ``captions`` (str, "" when none)."""


class VideoTask:
    """Training task of the 4D video DiT; ``cfg`` is the composed Hydra config (model, vae, text,
    data, schedule, flow, reference, preview nodes; see ``configs/train_video4d.yaml``)."""

    def __init__(self, cfg: DictConfig, env: DistEnv):
        self.cfg, self.env = cfg, env
        self.frames_schedule = StepSchedule(OmegaConf.to_container(cfg.schedule.frames))
        self.num_frames = self.frames_schedule(0)
        self.source = build_source(cfg.data)
        self.position = 0  # micro-batches' samples consumed by this rank
        self.sampling = TimestepSampling(**OmegaConf.to_container(cfg.flow.timestep))
        probs = OmegaConf.to_container(cfg.reference.probs)
        self.choice = ReferenceChoice(**probs, view=cfg.reference.view, time=cfg.reference.time)
        self.cells = ReferenceCells(view=cfg.reference.view, time=cfg.reference.time)
        self.vae: Optional[nn.Module] = None
        self.texts: Optional[CaptionContexts] = None
        self.latent_cache = None
        self._dit_config: dict[str, Any] = {}

    # ---------------------------------------------------------------- model
    def build_model(self, placement: Optional[Placement] = None) -> nn.Module:
        """The DiT (weights from ``model.weights`` or a seeded init identical on all ranks) built as the
        engine's ``placement`` says (default: CPU, fp32; ZeRO-3: partitioned at construction, each rank
        reading its own slices of the weights), trainable parameters chosen by ``model.trainable``
        patterns, and the frozen VAE (and text encoder) on this rank's device, never partitioned."""
        from video4d import load_dit, load_vae
        from video4d.model import select_trainable

        model_cfg = OmegaConf.to_container(self.cfg.model, resolve=True)
        loader = {k: model_cfg.pop(k) for k in LOADER_KEYS}
        self._dit_config = model_cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(loader["init_seed"])
            model = load_dit(model_cfg, weights=loader["weights"], init=loader["init"], placement=placement)
            self.vae = load_vae(self.cfg.vae.config, weights=self.cfg.vae.weights, device=self.env.device).eval().requires_grad_(False)
        counts = select_trainable(model, loader["trainable"])
        self.patch, self.reference_mode = model.config.patch_size, model.config.reference_mode
        self.texts = self._build_texts(model.config.text_dim, model.config.text_len)
        if self.cfg.vae.latent_cache:
            from video4d.vae.latent_cache import LatentCache

            self.latent_cache = LatentCache(self.cfg.vae.latent_cache)
            self._vae_hash = _module_hash(self.vae)
        if self.env.is_main:
            log.info("DiT: %s trainable / %s frozen parameters", f"{counts.trainable:,}", f"{counts.frozen:,}")
        return model

    def _build_texts(self, text_dim: int, text_len: int) -> CaptionContexts:
        """Per-sample contexts from ``text``: the text encoder ``text.encoder`` (a mapping of
        ``video4d.load_text_encoder`` arguments, or null) or precomputed files."""
        t = self.cfg.text
        encoder = None
        if t.get("encoder"):
            from video4d import load_text_encoder

            encoder = load_text_encoder(**OmegaConf.to_container(t.encoder, resolve=True), device=self.env.device).eval()
        return CaptionContexts(text_dim, text_len, encoder=encoder, context_root=t.get("context_root"), context_file=t.context_file,
                               empty_file=t.get("empty_context_file"), dropout=float(t.get("dropout", 0.0)))

    def export_metadata(self) -> dict[str, str]:
        """``dit_config``: the DiT config as JSON, loadable with ``video4d.load_dit(json.loads(...), weights=...)``."""
        return {"dit_config": json.dumps(self._dit_config)}

    # ----------------------------------------------------------------- data
    def on_step(self, step: int) -> None:
        """Progressive temporal schedule: clip length for optimizer step ``step``."""
        self.num_frames = int(self.frames_schedule(step))

    def next_batch(self, micro_batch: int, device: torch.device) -> VideoBatch:
        """This rank's next ``micro_batch`` samples at the current clip length, on ``device``. With
        ``vae.latent_cache`` the batch holds ``latents`` (each clip encoded once; a cached clip of a
        source that can :meth:`ProceduralClips.describe` it is not even rendered) instead of frames."""
        samples, latents = [], []
        for _ in range(micro_batch):
            index = self.position * self.env.dp_size + self.env.dp_rank
            self.position += 1
            if self.latent_cache is None:
                samples.append(self.source.sample(index, self.num_frames))
                continue
            info = self.source.describe(index, self.num_frames) if hasattr(self.source, "describe") else None
            cached = self.latent_cache.get(f"{info['clip']}/vae-{self._vae_hash}") if info else None
            if cached is None:
                info = self.source.sample(index, self.num_frames) if info is None else {**info, **self.source.sample(index, self.num_frames)}
                key = f"{info['clip']}/vae-{self._vae_hash}" if "clip" in info else clip_id(info["scene"], info["frames"], self._vae_hash)
                cached = self.encode(info["frames"][None].to(device), [key])[0]
            samples.append(info)
            latents.append(cached.to(device))
        batch = VideoBatch(
            drop_time_ref=torch.tensor([bool(s.get("drop_freeze_time_frame_cond", False)) for s in samples]),
            scenes=[s["scene"] for s in samples],
            kinds=[s["kind"] for s in samples],
            captions=[str(s.get("caption") or "") for s in samples],
        )
        if latents:
            batch["latents"] = torch.stack(latents)
        else:
            batch["frames"] = torch.stack([s["frames"] for s in samples]).to(device)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Data position of this rank: ``{"position": samples consumed}``."""
        return {"position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.position = int(state["position"])

    # ----------------------------------------------------------------- loss
    def context(self, batch: VideoBatch, device: torch.device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Text contexts ``[B, text_len, text_dim]`` of the batch's samples (captions dropped to the
        empty prompt with probability ``text.dropout`` when a ``generator`` is given)."""
        samples = [{"scene": s, "caption": c} for s, c in zip(batch["scenes"], batch["captions"])]
        return self.texts(samples, generator, device)

    def encode(self, frames: torch.Tensor, clip_ids: Optional[list[str]] = None) -> torch.Tensor:
        """Frames ``[B, V, F, 3, H, W]`` -> latents ``[B, V, T, 16, H/8, W/8]`` with the frozen VAE (fp32,
        outside autocast); with ``clip_ids`` (``vae.latent_cache`` set) each clip through the cache."""
        with torch.no_grad(), torch.autocast(frames.device.type, enabled=False):
            if clip_ids is None or self.latent_cache is None:
                return self.vae.encode(frames.float(), max_videos=self.cfg.vae.max_videos).to(frames.device)
            return torch.stack([
                self.latent_cache.get_or_encode(k, f.float(), self.vae, max_videos=self.cfg.vae.max_videos).to(frames.device)
                for k, f in zip(clip_ids, frames)
            ])

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
        """Samples and DiT tokens (``V * T * (H/8/ph) * (W/8/pw)`` per sample) in ``batch``."""
        if "latents" in batch:
            B, V, T, _, h, w = batch["latents"].shape
            return B, B * V * T * (h // self.patch[1]) * (w // self.patch[2])
        B, V, F, _, H, W = batch["frames"].shape
        T = (F - 1) // 4 + 1
        return B, B * V * T * (H // 8 // self.patch[1]) * (W // 8 // self.patch[2])

    # -------------------------------------------------------------- preview
    def preview(self, model: nn.Module, step: int) -> Optional[torch.Tensor]:
        """Sample data item ``preview.index`` with ``preview.steps`` Euler steps from its caption and its
        references (fixed-view row and freeze-time column; none when V = 1) and
        decode it: an image grid ``[3, H', W']`` (top: ground truth, bottom: sample; rows = views,
        columns = every ``preview.frame_stride``-th frame)."""
        device = next(model.parameters()).device
        item = self.source.sample(self.cfg.preview.index, self.num_frames)
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


def warm_latent_cache(cfg: DictConfig, start: int, stop: int, env: Optional[DistEnv] = None) -> int:
    """Encode the clips of sample indices ``start .. stop - 1`` at the first clip length of
    ``schedule.frames`` into ``vae.latent_cache``, as the training run would on first reading them
    (run several of these on disjoint ranges in parallel before or beside training). Returns the
    number of clips encoded now (the others were cached already)."""
    if not cfg.vae.latent_cache:
        raise ValueError("warm_latent_cache needs vae.latent_cache (the cache root to fill)")
    from fourd.train.distributed import dist_env

    task = VideoTask(cfg, env or dist_env())
    task.build_model()
    before = task.latent_cache.misses
    for index in range(start, stop):
        task.position = index
        task.next_batch(1, task.env.device)
    return task.latent_cache.misses - before


def clip_id(scene: str, frames: torch.Tensor, vae_hash: str) -> str:
    """Latent-cache key of one clip ``frames [V, F, 3, H, W]``: scene name, shape (views, frames,
    resolution), a hash of the pixel values (so a different crop, frame window or view order is a
    different clip) and the VAE's hash."""
    V, F, _, H, W = frames.shape
    digest = hashlib.sha256(frames.detach().cpu().contiguous().float().numpy().tobytes()).hexdigest()[:20]
    return f"{scene}/v{V}_f{F}_{H}x{W}/{digest}/vae-{vae_hash}"


def _module_hash(module: nn.Module) -> str:
    """Short sha256 over a module's config and state dict (names, shapes, values): identifies the VAE."""
    h = hashlib.sha256(repr(getattr(module, "config", "")).encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]
