"""The reconstructor's training task for the generic loop (:class:`fourd.train.loop.Task`).

A sample is one scene seen by ``V_in + V_tgt`` synchronized cameras at ``T`` timesteps. The model
sees the ``V_in`` input views (frames ``[B, V_in, T, 3, H, W]``) and predicts cameras, depth and
one Gaussian set per timestep; the Gaussians are rendered into the ``V_tgt`` held-out target
cameras (same timesteps) and compared with the target frames: ``MSE + lambda LPIPS``
(:class:`recon.losses.ReconstructionLoss`), optionally plus VGGT-style depth and camera terms.

Frames of reference (docs/recon.md explains the choice):

- Ground truth: the reference camera of timestep ``t`` is input view 0 at ``t`` (VGGT's first
  camera of each multi-view set). All GT cameras are re-expressed in it and scale-normalised like
  VGGT: divided by the mean distance of the valid GT points of the input views (one scale per
  sample).
- Prediction: the Gaussians of timestep ``t`` are mapped into the predicted camera of input view 0
  at ``t`` (with camera token replacement all timesteps share it; for a trained VGGT it is the
  identity already), then multiplied by a per-sample scale ``s`` aligning the predicted depth of
  the input views to the normalised GT depth (median ratio, no gradient; ``geometry.align_scale``).

Pixel convention: one for everything (``recon.geometry``): pixel centres at ``+0.5``. The data's
intrinsics, the model's unprojection (principal point of the pose encoding at ``(W/2, H/2)``), the
renderer and the export all use it, so GT intrinsics are used as they are everywhere.

Stages (``stage``): ``static`` (T = 1; trains the Gaussian head only, backbone frozen) and
``dynamic`` (T = ``recon_data.num_frames``; trains the temporal blocks and the Gaussian head; a
``recon_data.static_ratio`` share of samples are separate static scenes duplicated across time,
mixed in by :class:`fourd.data.MixtureDataset`). With camera token replacement, samples whose
cameras move over time are rejected (:func:`check_fixed_cameras`).
``recon_model.trainable`` = ``stage`` (that choice), ``all``, or a list of name prefixes.
"""
from __future__ import annotations

import functools
import json
import logging
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset
from torchvision.utils import make_grid

from fourd.data.loader import SampleKey, TaskData
from fourd.metrics import psnr, ssim
from fourd.sharded import Placement, numel
from fourd.train.distributed import DistEnv
from recon.geometry import cameras_to_pose_encoding, unproject_depth
from recon.inference import gaussians_in_reference_frame, relative_extrinsics, render_views

__all__ = [
    "LOADER_KEYS",
    "STAGE_TRAINABLE",
    "ReconTask",
    "SceneSampler",
    "build_criterion",
    "check_fixed_cameras",
    "evaluate",
    "normalize_ground_truth",
    "scale_alignment",
    "select_trainable",
    "split_views",
]

log = logging.getLogger(__name__)

STAGE_TRAINABLE = {
    "static": ("gaussian_head.",),
    "dynamic": ("aggregator.frame_temporal_blocks.", "aggregator.global_temporal_blocks.", "gaussian_head."),
}
LOADER_KEYS = ("weights", "init_seed", "trainable")  # recon_model keys that are not ReconstructorConfig fields


# ------------------------------------------------------------------------------------ parameters
def select_trainable(model: nn.Module, stage: str, trainable: Union[str, Sequence[str]] = "stage") -> tuple[int, int]:
    """Set ``requires_grad`` by parameter name; returns ``(trainable, frozen)`` parameter counts.

    ``trainable``: ``"stage"`` -> the prefixes of :data:`STAGE_TRAINABLE` [``stage``]; ``"all"`` ->
    everything; a list -> those name prefixes. Raises ``ValueError`` if nothing would train.
    """
    if stage not in STAGE_TRAINABLE:
        raise ValueError(f"unknown stage {stage!r}; use one of {sorted(STAGE_TRAINABLE)}")
    if isinstance(trainable, str):
        if trainable not in ("stage", "all"):
            raise ValueError(f"recon_model.trainable must be 'stage', 'all' or a list of prefixes, got {trainable!r}")
        prefixes = STAGE_TRAINABLE[stage] if trainable == "stage" else ("",)
    else:
        prefixes = tuple(trainable)
    counts = [0, 0]
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
        counts[0 if p.requires_grad else 1] += numel(p)
    if counts[0] == 0:
        raise ValueError(f"no parameter of the reconstructor matches the trainable prefixes {list(prefixes)}")
    return counts[0], counts[1]


def build_criterion(cfg: DictConfig) -> nn.Module:
    """:class:`recon.losses.ReconstructionLoss` from the ``loss`` node (lpips_weight, lpips_net,
    lpips_weights, lpips_random_backbone); a random LPIPS backbone logs a loud warning."""
    from recon.losses import ReconstructionLoss

    if cfg.lpips_weight > 0 and cfg.lpips_random_backbone:
        warnings.warn(
            "LPIPS uses a RANDOM backbone (loss.lpips_random_backbone=true): its values are not LPIPS; "
            "use this for tests and demos only and pass loss.lpips_weights=<vgg16-397923af.pth> for real training",
            stacklevel=2,
        )
    return ReconstructionLoss(cfg.lpips_weight, cfg.lpips_net, cfg.lpips_weights, random_backbone=cfg.lpips_random_backbone)


# ---------------------------------------------------------------------------------------- data
def split_views(num_views: int, num_inputs: int) -> tuple[list[int], list[int]]:
    """Input and target view indices of ``num_views`` cameras on an arc: ``num_inputs`` inputs
    spread evenly (both ends included), the others are targets (mostly interpolated views)."""
    if not 1 <= num_inputs < num_views:
        raise ValueError(f"need 1 <= input views < views, got {num_inputs} of {num_views}")
    inputs = sorted({round(i * (num_views - 1) / max(num_inputs - 1, 1)) for i in range(num_inputs)})
    return inputs, [v for v in range(num_views) if v not in inputs]


class SceneSampler:
    """Scenes for training and evaluation: ``sample(index, T, static, held_out)``; the training
    stream mixes both kinds through :meth:`mixture`.

    ``cfg`` is the ``recon_data`` node. **Dynamic** samples: ``source: synthetic`` renders
    :func:`fourd.data.generate_scene` scenes (training scene ``seed + index % num_scenes``, held-out
    scene ``eval_seed + index``); ``source: procedural`` renders the chain's and the benchmarks'
    family (:class:`fourd.data.procedural.ProceduralSource`, kind ``dynamic``: fixed cameras evenly on
    an ``arc_degrees`` arc, objects move; training seeds ``scene_seed(index, "train", seed,
    num_scenes)``, held-out seeds ``scene_seed(index, "held_out", eval_seed)`` >= 1_000_000);
    ``source: disk`` reads ``scenes`` / ``eval_scenes``
    (:class:`fourd.data.MultiViewSource`, cameras and depth required). **Static** samples are
    separate static scenes built as the paper builds them (§3.2: static datasets "copying multi-view
    samples across timesteps"; the generator's ``StaticSceneSource`` does the same): the frames of
    a camera moving through a static scene become the views, each duplicated over the T timesteps.
    Synthetic and procedural: :class:`fourd.data.procedural.ProceduralSource` in its static mode (same
    seeds as the dynamic procedural samples; the held-out offset is ``seed`` for synthetic); disk: :class:`fourd.data.StaticSceneSource`
    on ``static_scenes`` (training only).
    Returns ``{"frames" [V, T, 3, H, W], "depth" [V, T, H, W] (0 = invalid), "extrinsics"
    [V, T, 3, 4], "intrinsics" [V, T, 3, 3], "scene", "kind"}`` with ``V = input_views + target_views``.
    """

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.num_views = cfg.input_views + cfg.target_views
        if cfg.height % 14 or cfg.width % 14:
            raise ValueError(f"recon_data height/width must be multiples of the patch size 14, got {cfg.height}x{cfg.width}")
        if cfg.source not in ("synthetic", "procedural", "disk"):
            raise ValueError(f"unknown recon_data.source {cfg.source!r}; use 'synthetic', 'procedural' or 'disk'")
        if cfg.source == "procedural":
            _check_procedural(cfg, self.num_views)
        if not 0.0 <= cfg.static_ratio <= 1.0:
            raise ValueError(f"recon_data.static_ratio must lie in [0, 1], got {cfg.static_ratio}")
        if cfg.source == "disk" and cfg.static_ratio > 0 and not cfg.static_scenes:
            raise ValueError(f"recon_data.static_ratio={cfg.static_ratio} needs recon_data.static_scenes (a root of static scenes, "
                             "reused across time as the paper does); or set recon_data.static_ratio=0")
        self._cached = functools.lru_cache(maxsize=cfg.cache)(self._load)
        self._sources: dict[tuple[int, bool, bool], Any] = {}

    def sample(self, index: int, num_frames: int, static: bool, held_out: bool = False) -> dict[str, Any]:
        """Sample ``index`` (see the class docstring)."""
        return self._cached(index, num_frames, static, held_out)

    def mixture(self, num_frames: int):
        """The training stream: :class:`fourd.data.MixtureDataset` (the generator's mixture) of the
        ``dynamic`` and ``static`` samples at ratio ``1 - static_ratio : static_ratio``, seeded by
        ``seed``, view order kept (split_views relies on it); ``mixture[position]`` is a sample."""
        from fourd.data import MixtureDataset

        r = float(self.cfg.static_ratio)
        sources = {"dynamic": _KindSource(self, num_frames, False), "static": _KindSource(self, num_frames, True)}
        return MixtureDataset(sources, {"dynamic": 1.0 - r, "static": r}, seed=self.cfg.seed, reverse_views_prob=0.0)

    def __len__(self) -> int:
        """Training scenes per kind: ``num_scenes`` (synthetic, procedural) or the dynamic root's scene count."""
        return len(self._disk(1, False, False)) if self.cfg.source == "disk" else int(self.cfg.num_scenes)

    def _load(self, index: int, num_frames: int, static: bool, held_out: bool) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.source == "procedural" or (cfg.source == "synthetic" and static):
            s = self._procedural(held_out, static).sample(index, num_frames)
            return {k: s[k] for k in ("frames", "depth", "extrinsics", "intrinsics", "scene", "kind")}
        if cfg.source == "synthetic":
            from fourd.data import generate_scene

            seed = cfg.eval_seed + index if held_out else cfg.seed + index % cfg.num_scenes
            s = generate_scene(seed, self.num_views, num_frames, cfg.height, cfg.width, "dynamic", arc_degrees=cfg.arc_degrees)
            return {"frames": s.frames, "depth": s.depth, "extrinsics": s.extrinsics, "intrinsics": s.intrinsics, "scene": s.name, "kind": s.kind}
        if static and held_out:
            raise ValueError("held-out static samples from disk are not defined: recon_data.static_scenes is a training root")
        source = self._disk(num_frames, static, held_out)
        s = source.sample(index % len(source), np.random.default_rng([cfg.seed, index, int(held_out)]))
        if not s["has_cameras"]:
            raise ValueError(f"scene {s['scene']}: the reconstructor's training data needs cameras (scene.json cameras)")
        return {"frames": s["frames"], "depth": s["depth"], **s["cameras"], "scene": s["scene"], "kind": s["kind"], "skipped": s["skipped"]}

    def _procedural(self, held_out: bool, static: bool):
        """The :class:`fourd.data.procedural.ProceduralSource` of one kind (static or dynamic) and split."""
        from fourd.data.procedural import ProceduralSource

        key = ("procedural", static, held_out)
        if key not in self._sources:
            cfg = self.cfg
            offset = cfg.eval_seed if held_out and cfg.source == "procedural" else cfg.seed
            self._sources[key] = ProceduralSource(self.num_views, cfg.height, cfg.width, "held_out" if held_out else "train", offset,
                                                  num_scenes=None if held_out else cfg.num_scenes, static_fraction=float(static),
                                                  arc_degrees=cfg.arc_degrees, cache=1)
        return self._sources[key]

    def _disk(self, num_frames: int, static: bool, held_out: bool):
        from fourd.data import MultiViewSource, StaticSceneSource

        cfg = self.cfg
        key = (num_frames, static, held_out)
        if key not in self._sources:
            size = (cfg.height, cfg.width)
            if static:
                self._sources[key] = StaticSceneSource(cfg.static_scenes, self.num_views, num_frames, size, with_depth=True, seed=cfg.seed)
            else:
                root = cfg.eval_scenes if held_out else cfg.scenes
                self._sources[key] = MultiViewSource(root, self.num_views, num_frames, size, cfg.frame_stride, "random",
                                                     with_depth=True, seed=cfg.seed)
        return self._sources[key]


def _check_procedural(cfg: DictConfig, num_views: int) -> None:
    """``recon_data`` of ``source: procedural`` (configs/recon_data/procedural.yaml): raise
    ``ValueError`` naming the key and the fix."""
    from fourd.data.procedural import HELD_OUT_SEED_START

    if num_views < 2:
        raise ValueError(f"recon_data.input_views + target_views must be >= 2 for procedural grids, got {num_views}")
    if not isinstance(cfg.num_scenes, int) or cfg.num_scenes < 1:
        raise ValueError(f"recon_data.num_scenes must be a positive int (training scenes), got {cfg.num_scenes!r}")
    if not isinstance(cfg.seed, int) or not isinstance(cfg.eval_seed, int) or cfg.seed < 0 or cfg.eval_seed < 0:
        raise ValueError(f"recon_data.seed and recon_data.eval_seed must be ints >= 0 (offsets of the train and held-out "
                         f"seed ranges), got {cfg.seed!r}, {cfg.eval_seed!r}")
    if cfg.seed + cfg.num_scenes > HELD_OUT_SEED_START:
        raise ValueError(f"recon_data.seed + num_scenes = {cfg.seed + cfg.num_scenes} exceeds the training seed range "
                         f"[0, {HELD_OUT_SEED_START}) of fourd.data.procedural; lower recon_data.num_scenes or seed")
    if cfg.arc_degrees is None or not 0 < float(cfg.arc_degrees) < 360:
        raise ValueError(f"recon_data.arc_degrees must lie in (0, 360) for procedural grids (the chain: 90), got {cfg.arc_degrees!r}")


class _KindSource:
    """One kind (static or dynamic) of a :class:`SceneSampler`'s training samples at ``T`` frames, as
    a :class:`fourd.data.MixtureDataset` source (``len`` and ``sample(index, rng)``)."""

    def __init__(self, sampler: SceneSampler, num_frames: int, static: bool):
        self.sampler, self.num_frames, self.static = sampler, num_frames, static

    def __len__(self) -> int:
        cfg = self.sampler.cfg
        if self.static and cfg.source == "disk":
            return len(self.sampler._disk(self.num_frames, True, False)) if cfg.static_scenes else 0
        return len(self.sampler)

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        return dict(self.sampler.sample(index, self.num_frames, self.static))


class _TrainingSamples(Dataset):
    """A :class:`ReconTask`'s training samples by :class:`fourd.data.loader.SampleKey`: mixture
    position ``key.index``, passed through ``checked``."""

    def __init__(self, mixture, checked: Callable[[Mapping[str, Any]], Mapping[str, Any]]):
        self.mixture, self.checked = mixture, checked

    def __getitem__(self, key: SampleKey) -> Mapping[str, Any]:
        return self.checked(self.mixture[key.index])


def check_fixed_cameras(sample: Mapping[str, Any], allow_moving: bool, tol: float = 1e-4) -> None:
    """Camera token replacement gives every timestep the cameras of the first one, so it assumes
    each view's camera does not move over time: raise ``ValueError`` (``allow_moving``: warn) when
    the GT ``extrinsics [V, T, 3, 4]`` of ``sample`` change over t by more than ``tol``."""
    ext = sample["extrinsics"]
    motion = float((ext - ext[:, :1]).abs().amax()) if ext.shape[1] > 1 else 0.0
    if motion <= tol:
        return
    msg = (f"scene {sample.get('scene', '?')}: the cameras move over time (max change of the extrinsics {motion:.3g}) but "
           "recon_model.camera_token_replacement=true assumes fixed cameras per view; use fixed-camera data, "
           "recon_model.camera_token_replacement=false, or recon_data.allow_moving_cameras=true to only warn")
    if not allow_moving:
        raise ValueError(msg)
    warnings.warn(msg, stacklevel=2)


def _checked(sample: Mapping[str, Any], replace: bool, allow_moving: bool) -> Mapping[str, Any]:
    """``sample``, after :func:`check_fixed_cameras` when the model replaces camera tokens (``replace``)."""
    if replace:
        check_fixed_cameras(sample, allow_moving)
    return sample


def collate(samples: Sequence[Mapping[str, Any]], num_inputs: int, device: torch.device) -> dict[str, Any]:
    """Stack samples and split views: ``inputs`` / ``targets`` frames ``[B, V, T, 3, H, W]``,
    ``in_depth`` ``[B, V_in, T, H, W]``, ``in_ext``/``tgt_ext`` ``[B, V, T, 3, 4]``,
    ``in_K``/``tgt_K`` ``[B, V, T, 3, 3]`` (data convention), ``scenes``, ``kinds``."""
    inputs, targets = split_views(samples[0]["frames"].shape[0], num_inputs)

    def stack(key: str, views: list[int]) -> torch.Tensor:
        return torch.stack([s[key][views] for s in samples]).float().to(device)

    return {
        "inputs": stack("frames", inputs), "targets": stack("frames", targets), "in_depth": stack("depth", inputs),
        "in_ext": stack("extrinsics", inputs), "tgt_ext": stack("extrinsics", targets),
        "in_K": stack("intrinsics", inputs), "tgt_K": stack("intrinsics", targets),
        "scenes": [s["scene"] for s in samples], "kinds": [s["kind"] for s in samples],
    }


# ------------------------------------------------------------------------------------ geometry
def normalize_ground_truth(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GT cameras and depth in the reference frame of each timestep (input view 0 at ``t``), scaled by
    the inverse mean distance of the valid input points (depth > 0) to it, as VGGT's training.

    Returns ``in_ext [B, V_in, T, 3, 4]``, ``tgt_ext [B, V_tgt, T, 3, 4]`` (when ``batch`` has
    ``tgt_ext``), ``depth [B, V_in, T, H, W]`` (normalised, 0 = invalid), ``scale [B]`` (the world
    units per normalised unit). Intrinsics (pixel centres at +0.5, the project's one convention)
    are used as they are.
    """
    ref = batch["in_ext"][:, :1]
    in_ext = relative_extrinsics(batch["in_ext"], ref)
    depth = batch["in_depth"]
    valid = depth > 0
    points = unproject_depth(depth, in_ext, batch["in_K"])
    dist = (points.norm(dim=-1) * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    if not bool((dist > 0).all()):
        bad = [batch["scenes"][i] for i in (dist <= 0).nonzero().flatten().tolist()] if "scenes" in batch else "?"
        raise ValueError(f"scenes {bad}: no valid depth in the input views, cannot normalise the scale")
    scale = dist[:, None, None, None, None]
    out = {"in_ext": torch.cat([in_ext[..., :3], in_ext[..., 3:] / scale], dim=-1), "depth": depth / scale, "scale": dist}
    if "tgt_ext" in batch:
        tgt_ext = relative_extrinsics(batch["tgt_ext"], ref)
        out["tgt_ext"] = torch.cat([tgt_ext[..., :3], tgt_ext[..., 3:] / scale], dim=-1)
    return out


def scale_alignment(pred_depth: torch.Tensor, gt_depth: torch.Tensor) -> torch.Tensor:
    """Per-sample scale ``[B]`` (no gradient): median of ``gt / pred`` over valid pixels (gt > 0);
    both depths ``[B, ...]``."""
    with torch.no_grad():
        ratio = gt_depth / pred_depth.clamp(min=1e-6)
        ratio = torch.where(gt_depth > 0, ratio, torch.nan)
        return ratio.flatten(1).nanmedian(dim=1).values.nan_to_num(1.0)


# ------------------------------------------------------------------------------------------ task
class ReconTask:
    """Training task of the feedforward reconstructor; ``cfg`` is the composed Hydra config
    (``stage``, ``recon_model``, ``recon_data``, ``loss``, ``geometry``, ``render`` nodes; see
    ``configs/train_recon.yaml``)."""

    def __init__(self, cfg: DictConfig, env: DistEnv):
        self.cfg, self.env = cfg, env
        self.stage = cfg.stage
        if self.stage not in STAGE_TRAINABLE:
            raise ValueError(f"unknown stage {self.stage!r}; use one of {sorted(STAGE_TRAINABLE)}")
        self.num_frames = 1 if self.stage == "static" else int(cfg.recon_data.num_frames)
        self.scenes = SceneSampler(cfg.recon_data)
        self.checked = functools.partial(_checked, replace=bool(cfg.recon_model.camera_token_replacement),
                                         allow_moving=bool(cfg.recon_data.allow_moving_cameras))
        self.criterion: Optional[nn.Module] = None
        self.model_config: dict[str, Any] = {}
        self.patch_tokens = 5 + (cfg.recon_data.height // 14) * (cfg.recon_data.width // 14)

    def build_model(self, placement: Optional[Placement] = None) -> nn.Module:
        """The reconstructor (``recon_model.weights`` or a seeded init identical on all ranks) built as
        the engine's ``placement`` says (default: CPU, fp32; ZeRO-3: partitioned at construction),
        with the stage's trainable parameters and the stage's ``geometry.detach_depth`` (Gaussian
        centres from the detached depth), and the loss on this rank's device (never partitioned)."""
        from recon.model import load_reconstructor

        node = OmegaConf.to_container(self.cfg.recon_model, resolve=True)
        loader = {k: node.pop(k) for k in LOADER_KEYS}
        detach = self.cfg.geometry.detach_depth[self.stage]  # per stage, measured (docs/recon.md)
        node["gaussian"] = {**node.get("gaussian", {}), "detach_depth": bool(detach)}
        self.model_config = node
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(loader["init_seed"])
            model = load_reconstructor(node, weights=loader["weights"], placement=placement)
        if model.gaussian_head is None:
            raise ValueError(f"recon_model preset {node.get('preset')!r} has no Gaussian head; use a 4D preset (tiny-4d, vggt-1b-4d)")
        trainable, frozen = select_trainable(model, self.stage, loader["trainable"])
        self.criterion = build_criterion(self.cfg.loss).to(self.env.device)
        if self.env.is_main:
            log.info("reconstructor (%s stage): %s trainable / %s frozen parameters", self.stage, f"{trainable:,}", f"{frozen:,}")
        return model

    def export_metadata(self) -> dict[str, str]:
        """``recon_config``: the model config as JSON, for ``load_reconstructor(json.loads(...), weights=...)``."""
        return {"recon_config": json.dumps(self.model_config)}

    def on_step(self, step: int) -> None:
        """No step schedule: the stage fixes T."""

    def data(self, micro_batch: int) -> TaskData:
        """Sample ``i`` (:class:`fourd.data.loader.SampleKey` index) is mixture position ``i`` (dynamic
        and static samples, :meth:`SceneSampler.mixture`), checked; micro-batches collated by :func:`collate`."""
        return TaskData(_TrainingSamples(self.scenes.mixture(self.num_frames), self.checked),
                        functools.partial(collate, num_inputs=self.cfg.recon_data.input_views, device=torch.device("cpu")))

    def predict_targets(self, model, batch: Mapping[str, Any]) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        """Reconstruct the input views and render the targets: ``(renders [B, V_tgt, T, 3, H, W],
        model output, normalised GT)``; the scale used is ``gt["align"] [B]``."""
        out = model(batch["inputs"])
        gt = normalize_ground_truth(batch)
        align = scale_alignment(out.depth, gt["depth"]) if self.cfg.geometry.align_scale else torch.ones_like(gt["scale"])
        g = gaussians_in_reference_frame(out.gaussians, out.extrinsics[:, 0], align)
        H, W = batch["targets"].shape[-2:]
        renders = render_views(g, gt["tgt_ext"], batch["tgt_K"], H, W, self.cfg.render.background, self.cfg.render.backend)
        gt["align"] = align
        return renders, out, gt

    def loss(self, model, batch: Mapping[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Rendering loss on the target views (+ ``loss.depth_weight`` * depth L1 + ``loss.camera_weight``
        * pose-encoding L1 against the normalised GT + ``loss.target_camera_weight`` *
        :meth:`target_camera_loss`; no randomness)."""
        renders, out, gt = self.predict_targets(model, batch)
        terms = self.criterion(renders.flatten(0, 2), batch["targets"].flatten(0, 2))
        total = terms["loss"]
        stats = {k: float(terms[k].detach()) for k in ("mse", "lpips")} | {"scale_align": float(gt["align"].mean())}
        stats["psnr"] = float(psnr(renders.detach().clamp(0, 1).flatten(0, 2), batch["targets"].flatten(0, 2)).mean())
        cfg = self.cfg.loss
        if cfg.depth_weight > 0:
            valid = gt["depth"] > 0
            depth_l1 = ((out.depth - gt["depth"]).abs() * valid).sum() / valid.sum().clamp(min=1)
            total = total + cfg.depth_weight * depth_l1
            stats["depth_l1"] = float(depth_l1.detach())
        if cfg.camera_weight > 0:
            H, W = batch["inputs"].shape[-2:]
            target = cameras_to_pose_encoding(gt["in_ext"], batch["in_K"], (H, W))
            camera_l1 = torch.stack([(enc - target).abs().mean() for enc in out.pose_enc_list]).mean()
            total = total + cfg.camera_weight * camera_l1
            stats["camera_l1"] = float(camera_l1.detach())
        if cfg.target_camera_weight > 0:
            target_camera_l1 = self.target_camera_loss(model, batch, gt)
            total = total + cfg.target_camera_weight * target_camera_l1
            stats["target_camera_l1"] = float(target_camera_l1.detach())
        return total, stats

    def target_camera_loss(self, model, batch: Mapping[str, Any], gt: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The test-time camera pass (paper §4.2) supervised: the model sees input view 0 plus the
        targets ``[B, 1 + V_tgt, T]`` and its pose encodings (every camera-head iteration) are pulled to
        the GT cameras of those views (L1), its depth of view 0 to the GT depth (L1 over valid pixels),
        both in the normalisation of the input set, so the probe's cameras and depth share one scale
        (the test-time protocol aligns the two passes by that depth)."""
        probe = model(torch.cat([batch["inputs"][:, :1], batch["targets"]], dim=1))
        H, W = batch["inputs"].shape[-2:]
        ext = torch.cat([gt["in_ext"][:, :1], gt["tgt_ext"]], dim=1)  # [B, 1 + V_tgt, T, 3, 4]
        K = torch.cat([batch["in_K"][:, :1], batch["tgt_K"]], dim=1)
        target = cameras_to_pose_encoding(ext, K, (H, W))
        camera_l1 = torch.stack([(enc - target).abs().mean() for enc in probe.pose_enc_list]).mean()
        valid = gt["depth"][:, :1] > 0
        depth_l1 = ((probe.depth[:, :1] - gt["depth"][:, :1]).abs() * valid).sum() / valid.sum().clamp(min=1)
        return camera_l1 + depth_l1

    def batch_size_and_tokens(self, batch: Mapping[str, Any]) -> tuple[int, int]:
        """Samples and backbone tokens (``V_in * T * (5 + patches)`` per sample) in ``batch``."""
        B, V, T = batch["inputs"].shape[:3]
        return B, B * V * T * self.patch_tokens

    def eval_batches(self, device: torch.device):
        """Held-out scenes (``recon_data.eval_scenes`` of them, dynamic at this stage's T), one per batch."""
        for i in range(self.cfg.recon_data.eval_scene_count):
            sample = self.checked(self.scenes.sample(i, self.num_frames, False, held_out=True))
            yield collate([sample], self.cfg.recon_data.input_views, device)

    def preview(self, model: nn.Module, step: int) -> Optional[torch.Tensor]:
        """Log held-out PSNR/SSIM and return a grid of the first held-out scene: per target view, the
        GT row then the render row; columns are timesteps."""
        metrics = evaluate(self, model)
        log.info("step %d: held-out novel-view PSNR %.2f dB, SSIM %.3f", step, metrics["psnr"], metrics["ssim"])
        batch = next(iter(self.eval_batches(next(model.parameters()).device)))
        renders, _, _ = self.predict_targets(model, batch)
        rows = torch.stack([batch["targets"][0], renders[0].clamp(0, 1)], dim=1).flatten(0, 1)  # [2 V_tgt, T, 3, H, W]
        return make_grid(rows.flatten(0, 1).float().cpu(), nrow=rows.shape[1], padding=1)


@torch.no_grad()
def evaluate(task: ReconTask, model: nn.Module) -> dict[str, float]:
    """Mean novel-view PSNR (dB) and SSIM of the target views of the held-out scenes (renders clamped
    to [0, 1]); the model is put in eval mode and back."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    values = {"psnr": [], "ssim": []}
    for batch in task.eval_batches(device):
        renders, _, _ = task.predict_targets(model, batch)
        pred, target = renders.clamp(0, 1).flatten(0, 2).float(), batch["targets"].flatten(0, 2)
        values["psnr"].append(psnr(pred, target))
        values["ssim"].append(ssim(pred, target, window_size=min(11, pred.shape[-1], pred.shape[-2])))
    model.train(was_training)
    return {k: float(torch.cat(v).mean()) for k, v in values.items()}
