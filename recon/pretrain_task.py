"""Pretraining the tiny VGGT base from scratch: the stand-in for VGGT-1B that the paper's stage 1 freezes.

Issue "Tiny base models trained from scratch here", item 4. The tiny reconstructor (``recon_model``,
default ``preset: tiny`` without the track head) is trained with **all** parameters on static
multi-view sets with VGGT's own supervision (:mod:`recon.vggt_losses`: camera loss on the pose
encoding, depth and point losses with confidence). A head whose loss weight is 0 may be disabled
(``recon_model.enable_depth`` / ``enable_point: false``): camera-only pretraining, several times
cheaper per set, which a run with every loss can continue (``recon_model.weights``: the new heads
start at their init). Its export loads with
``load_reconstructor(json.loads(metadata["recon_config"]), weights=...)`` and as the backbone of
the 4D preset (``recon_model=tiny recon_model.weights=<it>``: the point head's keys are dropped, the
temporal blocks and the Gaussian head start at their init).

Data (``base_data``): one sample = ``views`` cameras on an arc of ``arc_degrees`` (drawn per sample
from the given range) around a static procedural scene (:func:`fourd.data.generate_scene`, kind
``static``, one timestep), the views in order along the arc or shuffled (``view_order``). Training sample ``i`` shows seed ``seed + i`` (an unbounded stream, never
repeated); held-out scene ``j`` has seed ``held_out_seed + j`` (1_000_000 + j by default, a range
training never reaches: an error says so if it would).
Ground truth is VGGT's normalised frame (:func:`recon.train_task.normalize_ground_truth`).
"""
from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any, Mapping, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset
from torchvision.utils import make_grid

from fourd.data.loader import SampleKey, TaskData
from fourd.sharded import Placement
from fourd.train.distributed import DistEnv
from recon.geometry import cameras_from_points, cameras_to_pose_encoding, pose_encoding_to_cameras, unproject_depth
from recon.train_task import LOADER_KEYS, normalize_ground_truth, select_trainable
from recon.vggt_losses import (
    VGGTLossConfig,
    abs_rel_median_aligned,
    camera_loss,
    confidence_regression,
    gradient_loss,
    rotation_angle_deg,
    translation_angle_deg,
)

__all__ = ["VIEW_ORDERS", "BaseTask", "base_scene", "view_spread_deg", "evaluate_base", "baseline_metrics", "pretrain"]

log = logging.getLogger(__name__)


VIEW_ORDERS = ("arc", "shuffled")


def _check_view_order(view_order: str) -> None:
    if view_order not in VIEW_ORDERS:
        raise ValueError(f"base_data.view_order must be one of {VIEW_ORDERS}, got {view_order!r}")


def base_scene(seed: int, views: int, height: int, width: int, arc_range: tuple[float, float], view_order: str = "arc") -> dict[str, Any]:
    """One static multi-view set: ``frames [V, 1, 3, H, W]``, ``depth [V, 1, H, W]``, ``extrinsics
    [V, 1, 3, 4]``, ``intrinsics [V, 1, 3, 3]`` (pixel centres at +0.5) of scene ``seed``; the arc
    spanned by the cameras is drawn from ``arc_range`` (degrees) with the same seed. ``view_order``:
    ``arc`` (views in order along the arc, view 0 at one end) or ``shuffled`` (a permutation drawn
    with the same seed: the reference view 0 lies anywhere on the arc and the others on both sides)."""
    from fourd.data import generate_scene

    _check_view_order(view_order)
    arc = float(np.random.default_rng([seed, 11]).uniform(*arc_range))
    s = generate_scene(seed, views, 1, height, width, "static", arc_degrees=arc)
    order = np.random.default_rng([seed, 12]).permutation(views) if view_order == "shuffled" else np.arange(views)
    return {"frames": s.frames[order], "depth": s.depth[order], "extrinsics": s.extrinsics[order], "intrinsics": s.intrinsics[order]}


def _collate(samples: list[dict[str, Any]], device: torch.device) -> dict[str, torch.Tensor]:
    """``inputs [B, V, 1, 3, H, W]``, ``in_depth [B, V, 1, H, W]``, ``in_ext``, ``in_K`` (the keys of
    :func:`recon.train_task.normalize_ground_truth`)."""
    keys = {"inputs": "frames", "in_depth": "depth", "in_ext": "extrinsics", "in_K": "intrinsics"}
    return {k: torch.stack([s[v] for s in samples]).float().to(device) for k, v in keys.items()}


def _targets(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Normalised GT: ``in_ext``, ``depth`` (as normalize_ground_truth), ``pose_enc [B, V, 1, 9]``,
    ``points [B, V, 1, H, W, 3]`` (first camera's frame), ``valid`` (depth > 0)."""
    gt = normalize_ground_truth(batch)
    H, W = batch["inputs"].shape[-2:]
    gt["pose_enc"] = cameras_to_pose_encoding(gt["in_ext"], batch["in_K"], (H, W))
    gt["points"] = unproject_depth(gt["depth"], gt["in_ext"], batch["in_K"])
    gt["valid"] = gt["depth"] > 0
    return gt


def _camera_errors(pred_ext: torch.Tensor, gt_ext: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation and translation-direction angle errors (degrees) of views 1.. (view 0 is the
    reference, identity in both), extrinsics ``[B, V, T, 3, 4]`` -> two ``[B, V - 1, T]``."""
    return rotation_angle_deg(pred_ext[:, 1:], gt_ext[:, 1:]), translation_angle_deg(pred_ext[:, 1:, ..., 3], gt_ext[:, 1:, ..., 3])


def view_spread_deg(ext: torch.Tensor) -> torch.Tensor:
    """Mean rotation angle (degrees) between the cameras of every pair of non-reference views (1..),
    extrinsics ``[B, V, T, 3, 4]`` -> ``[B]`` (NaN for V < 3): 0 when a model gives every view after
    the reference one shared pose, whatever the images (VGGT gives views 1.. one camera token, so
    only the image content can set them apart)."""
    V = ext.shape[1]
    pairs = [rotation_angle_deg(ext[:, i], ext[:, j]).flatten(1).mean(1) for i in range(1, V) for j in range(i + 1, V)]
    return torch.stack(pairs, 1).mean(1) if pairs else torch.full(ext.shape[:1], float("nan"))


class _BaseSets(Dataset):
    """Training sets by :class:`fourd.data.loader.SampleKey`: scene ``seed + key.index`` (:func:`base_scene`)."""

    def __init__(self, seed: int, held_out_seed: int, shape: tuple):
        self.seed, self.held_out_seed, self.shape = seed, held_out_seed, shape

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        seed = self.seed + key.index
        if seed >= self.held_out_seed:
            raise ValueError(f"training seed {seed} reached the held-out range (>= base_data.held_out_seed {self.held_out_seed})")
        return base_scene(seed, *self.shape)


class BaseTask:
    """Pretraining task of the tiny VGGT base for :func:`fourd.train.loop.train`; ``cfg`` is the
    composed ``configs/train_recon_base.yaml`` (``recon_model``, ``base_data``, ``base_loss``)."""

    def __init__(self, cfg: DictConfig, env: DistEnv):
        self.cfg, self.env = cfg, env
        data = cfg.base_data
        if data.height % 14 or data.width % 14:
            raise ValueError(f"base_data height/width must be multiples of the patch size 14, got {data.height}x{data.width}")
        if data.views < 2:
            raise ValueError(f"base_data.views must be >= 2 (cameras are relative to view 0), got {data.views}")
        lo, hi = data.arc_degrees
        if not 0 < lo <= hi:
            raise ValueError(f"base_data.arc_degrees must be [min, max] with 0 < min <= max, got {list(data.arc_degrees)}")
        _check_view_order(data.view_order)  # before training, not at the first sample
        self.loss_cfg = VGGTLossConfig(**OmegaConf.to_container(cfg.base_loss, resolve=True))
        self.model_config: dict[str, Any] = {}

    # ---------------------------------------------------------------------------- loop protocol
    def build_model(self, placement: Optional[Placement] = None) -> nn.Module:
        """The reconstructor of ``recon_model`` (seeded init, identical on all ranks; built as the
        engine's ``placement`` says), all trainable unless ``recon_model.trainable`` says otherwise.
        Needs the camera head, and the depth / point heads unless their ``base_loss`` weight is 0;
        ``recon_model.init_heads`` lets heads absent from ``recon_model.weights`` start at their init."""
        from recon.model import load_reconstructor

        node = OmegaConf.to_container(self.cfg.recon_model, resolve=True)
        loader = {k: node.pop(k) for k in LOADER_KEYS}
        init_heads = node.pop("init_heads", [])
        self.model_config = node
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(loader["init_seed"])
            model = load_reconstructor(node, weights=loader["weights"], placement=placement, init_heads=init_heads)
        c = self.loss_cfg
        needed = {"camera_head": "camera_weight", "depth_head": "depth_weight", "point_head": "point_weight"}
        missing = [h for h, w in needed.items() if getattr(model, h) is None and (h == "camera_head" or getattr(c, w) > 0)]
        if missing:
            raise ValueError(f"recon_model disables {missing}, which base_loss supervises: enable them (recon_model.enable_depth / "
                             "enable_point: true) or set base_loss.depth_weight / point_weight to 0 (the camera head is always needed)")
        extra = [h for h, w in needed.items() if getattr(model, h) is not None and getattr(c, w) == 0]
        if extra:
            log.warning("base_loss gives %s no weight: they train on nothing (disable them to save their compute)", extra)
        trainable, frozen = select_trainable(model, "static", loader["trainable"])
        if self.env.is_main:
            log.info("tiny VGGT base: %s trainable / %s frozen parameters", f"{trainable:,}", f"{frozen:,}")
        return model

    def on_step(self, step: int) -> None:
        """No schedule."""

    def data(self, micro_batch: int) -> TaskData:
        """Training set ``i`` (:class:`fourd.data.loader.SampleKey` index) is scene ``base_data.seed + i``."""
        d = self.cfg.base_data
        return TaskData(_BaseSets(d.seed, d.held_out_seed, _shape(d)), functools.partial(_collate, device=torch.device("cpu")))

    def loss(self, model, batch: Mapping[str, torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """VGGT's camera + depth + point losses (module docstring of :mod:`recon.vggt_losses`)."""
        out = model(batch["inputs"])
        gt = _targets(batch)
        c = self.loss_cfg
        cam = camera_loss(out.pose_enc_list, gt["pose_enc"], c)
        total = c.camera_weight * cam["camera"]
        terms: dict[str, torch.Tensor] = dict(cam)
        valid = gt["valid"]
        if out.depth is not None:  # absent only in camera-only pretraining (build_model checked the weights)
            depth_conf, depth_l1 = confidence_regression((out.depth - gt["depth"]).abs(), out.depth_conf, valid, c.alpha)
            depth_grad = gradient_loss(out.depth.flatten(0, 2), gt["depth"].flatten(0, 2), out.depth_conf.flatten(0, 2), valid.flatten(0, 2))
            total = total + c.depth_weight * (depth_conf + depth_l1 + c.gradient_weight * depth_grad)
            terms |= {"depth_conf": depth_conf, "depth_l1": depth_l1, "depth_grad": depth_grad}
            terms["abs_rel"] = abs_rel_median_aligned(out.depth.detach(), gt["depth"]).mean()
        if out.world_points is not None:
            point_conf, point_l1 = confidence_regression((out.world_points - gt["points"]).norm(dim=-1), out.world_points_conf, valid, c.alpha)
            total = total + c.point_weight * (point_conf + point_l1)
            terms |= {"point_conf": point_conf, "point_l1": point_l1}
        with torch.no_grad():
            rot, trans = _camera_errors(out.extrinsics, gt["in_ext"])
        stats = {k: float(v.detach()) for k, v in terms.items()}
        stats |= {"rot_err_deg": float(rot.mean()), "trans_err_deg": float(trans.mean())}
        return total, stats

    def batch_size_and_tokens(self, batch: Mapping[str, torch.Tensor]) -> tuple[int, int]:
        """Samples and backbone tokens (``V * (5 + patches)`` per sample)."""
        B, V, T, _, H, W = batch["inputs"].shape
        return B, B * V * T * (5 + (H // 14) * (W // 14))

    def export_metadata(self) -> dict[str, str]:
        """``recon_config``: the model config as JSON, for ``load_reconstructor(json.loads(...), weights=...)``."""
        return {"recon_config": json.dumps(self.model_config)}

    def preview(self, model: nn.Module, step: int) -> Optional[torch.Tensor]:
        """Log the held-out errors; grid of the first held-out set: input row, GT depth row, predicted
        depth row (depths scaled to [0, 1] by the GT's maximum, the prediction median-aligned); the
        input row alone without a depth head (camera-only pretraining)."""
        metrics = evaluate_base(model, self.cfg.base_data)
        log.info("step %d: held-out rotation error %.2f deg, translation angle %.2f deg, spread of views 1.. %.2f deg, depth abs-rel %.3f",
                 step, metrics["rot_err_deg"], metrics["trans_err_deg"], metrics["view_spread_deg"], metrics.get("abs_rel", float("nan")))
        batch = _collate([base_scene(self.cfg.base_data.held_out_seed, *_shape(self.cfg.base_data))], next(model.parameters()).device)
        if model.depth_head is None:  # camera-only pretraining: the input row alone
            return make_grid(batch["inputs"][0, :, 0].float().cpu(), nrow=batch["inputs"].shape[1], padding=1)
        gt = _targets(batch)
        pred = model(batch["inputs"]).depth
        pred = pred * (gt["depth"] / pred).flatten(1).median(1).values[:, None, None, None, None]
        top = gt["depth"].amax().clamp(min=1e-6)
        rows = [batch["inputs"][0, :, 0]] + [(d[0, :, 0] / top).clamp(0, 1)[:, None].expand(-1, 3, -1, -1) for d in (gt["depth"], pred)]
        return make_grid(torch.cat(rows).float().cpu(), nrow=rows[0].shape[0], padding=1)


def _shape(data: DictConfig) -> tuple[int, int, int, tuple[float, float], str]:
    """:func:`base_scene`'s arguments after the seed, from the ``base_data`` node."""
    return data.views, data.height, data.width, tuple(data.arc_degrees), str(data.view_order)


# ------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_base(model: nn.Module, data: DictConfig) -> dict[str, float]:
    """Held-out errors of a reconstructor with camera and depth heads on ``data.eval_scene_count``
    sets (seeds ``held_out_seed + j``): mean rotation and translation-direction angle errors
    (degrees, views 1..; view 0 is the reference), the predicted cameras' :func:`view_spread_deg` and
    depth abs-rel after median scale alignment. With a point head also ``points_*``: the same camera
    errors and spread of the cameras its point map implies (:func:`recon.geometry.cameras_from_points`
    with its own depth and intrinsics): whether the backbone, not only the camera head, tells the views apart."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    m: dict[str, list[torch.Tensor]] = {}
    for j in range(data.eval_scene_count):
        batch = _collate([base_scene(data.held_out_seed + j, *_shape(data))], device)
        gt = _targets(batch)
        out = model(batch["inputs"])
        cameras = {"": out.extrinsics}
        if out.world_points is not None and out.depth is not None:
            cameras["points_"] = cameras_from_points(out.world_points, out.depth, out.intrinsics)
        for prefix, ext in cameras.items():
            r, t = _camera_errors(ext, gt["in_ext"])
            for key, value in (("rot_err_deg", r), ("trans_err_deg", t), ("view_spread_deg", view_spread_deg(ext))):
                m.setdefault(prefix + key, []).append(value.flatten())
        if out.depth is not None:
            m.setdefault("abs_rel", []).append(abs_rel_median_aligned(out.depth, gt["depth"]))
    model.train(was_training)
    return {k: float(torch.cat(v).mean()) for k, v in m.items()}


@torch.no_grad()
def baseline_metrics(data: DictConfig, train_samples: int = 64) -> dict[str, dict[str, float]]:
    """The trivial baselines on the held-out sets of :func:`evaluate_base`:

    - ``identity``: every camera = the reference (rotation error = the GT relative rotation; a zero
      translation has no direction and counts 90 degrees);
    - ``mean_pose``: per view index, the mean GT pose encoding of ``train_samples`` training sets;
    - ``mean_depth``: a constant depth map (after median alignment: the GT median everywhere);
    - ``ground_truth``: only the GT cameras' :func:`view_spread_deg` (what a model's spread should be).
    """
    shape = _shape(data)
    train = _targets(_collate([base_scene(data.seed + i, *shape) for i in range(train_samples)], torch.device("cpu")))
    mean_enc = train["pose_enc"].mean(0, keepdim=True)
    out = {"identity": {"rot_err_deg": [], "trans_err_deg": [], "view_spread_deg": []},
           "mean_pose": {"rot_err_deg": [], "trans_err_deg": [], "view_spread_deg": []},
           "mean_depth": {"abs_rel": []}, "ground_truth": {"view_spread_deg": []}}
    for j in range(data.eval_scene_count):
        gt = _targets(_collate([base_scene(data.held_out_seed + j, *shape)], torch.device("cpu")))
        eye = torch.zeros_like(gt["in_ext"])
        eye[..., :3, :3] = torch.eye(3)
        mean_ext, _ = pose_encoding_to_cameras(mean_enc, (data.height, data.width))
        for name, ext in (("identity", eye), ("mean_pose", mean_ext)):
            r, t = _camera_errors(ext, gt["in_ext"])
            out[name]["rot_err_deg"].append(float(r.mean()))
            out[name]["trans_err_deg"].append(float(t.mean()))
            out[name]["view_spread_deg"].append(float(view_spread_deg(ext).mean()))
        out["ground_truth"]["view_spread_deg"].append(float(view_spread_deg(gt["in_ext"]).mean()))
        out["mean_depth"]["abs_rel"].append(float(abs_rel_median_aligned(torch.ones_like(gt["depth"]), gt["depth"]).mean()))
    return {name: {k: float(np.mean(v)) for k, v in m.items()} for name, m in out.items()}


def pretrain(cfg: DictConfig, run_dir: str) -> list[str]:
    """Train the base (:class:`BaseTask` through :func:`fourd.train.hydra_app.run_task`, which also
    publishes the export to ``publish_to`` when set). Returns the exported paths."""
    from fourd.train.hydra_app import run_task

    return list(run_task(cfg, lambda env: BaseTask(cfg, env), run_dir).exports)


def plot_curve(run_dir: str, out_png: str, baselines: Mapping[str, Mapping[str, float]], held_out: Mapping[str, float]) -> None:
    """Training curve of a base run (``<run_dir>/metrics.jsonl``): loss, batch rotation error and batch
    depth abs-rel per step, with the held-out values of the trained model and the baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fourd.train.observe import read_metrics

    rows = [r for r in read_metrics(run_dir) if "rot_err_deg" in r]
    steps = [r["step"] for r in rows]
    panels = [("loss", "training loss", {}),
              ("rot_err_deg", "rotation error (deg)", {"identity": baselines["identity"]["rot_err_deg"],
                                                       "mean pose": baselines["mean_pose"]["rot_err_deg"]})]
    if rows and "abs_rel" in rows[0]:  # not in camera-only pretraining
        panels.append(("abs_rel", "depth abs-rel (median-aligned)", {"mean depth": baselines["mean_depth"]["abs_rel"]}))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6))
    for ax, (key, title, lines) in zip(axes, panels):
        ax.plot(steps, [r[key] for r in rows], lw=0.8, label="training batch")
        for i, (name, value) in enumerate(lines.items()):
            ax.axhline(value, ls="--", color=f"C{i + 2}", label=f"held-out {name}")
        if key in held_out:
            ax.axhline(held_out[key], ls="-", color="C1", label="held-out trained")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out_png) or ".", exist_ok=True)
    fig.savefig(out_png, dpi=90)


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m recon.pretrain_task --weights W [--run-dir R --png P] [base_data.KEY=VALUE ...]``:
    held-out camera and depth errors of the base ``W``, of its untrained init and of the trivial
    baselines (the table of docs/base_models.md) on ``configs/train_recon_base.yaml``'s ``base_data``
    with the given overrides (e.g. ``base_data.height=56 base_data.width=56`` for a base trained at
    56 x 56); with ``--run-dir`` also the training curve PNG."""
    import argparse

    from fourd.train.hydra_app import compose_training

    from fourd.weights import read_metadata
    from recon.model import load_reconstructor

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--weights", required=True, help="exported base (safetensors with recon_config metadata)")
    parser.add_argument("--run-dir", default=None, help="the training run (metrics.jsonl) for the curve")
    parser.add_argument("--png", default="docs/images/vggt_curve.png", help="curve output path")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of base_data (the held-out sets), e.g. base_data.height=56")
    args = parser.parse_args(argv)
    bad = [o for o in args.overrides if not o.startswith("base_data.")]
    if bad:
        parser.error(f"only base_data.* overrides select the held-out sets, got {bad}")
    data = compose_training("train_recon_base", list(args.overrides)).base_data
    config = json.loads(read_metadata(args.weights)["recon_config"])
    trained = load_reconstructor(config, weights=args.weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = load_reconstructor(config)
    rows = {"trained": evaluate_base(trained, data)}
    if "points_rot_err_deg" in rows["trained"]:
        rows["trained, cameras from its point map"] = {k[len("points_"):]: v for k, v in rows["trained"].items() if k.startswith("points_")}
    rows["untrained (init)"] = evaluate_base(untrained, data)
    base = baseline_metrics(data)
    print(f"held-out sets: {data.eval_scene_count} (seeds >= {data.held_out_seed}), {data.views} views, {data.height}x{data.width}")
    print("| model | rotation error (deg) | translation angle (deg) | depth abs-rel | spread of views 1.. (deg) |\n|---|---|---|---|---|")
    for name, m in {**rows, "identity cameras": base["identity"], "mean training pose": base["mean_pose"], "mean depth": base["mean_depth"],
                    "ground-truth cameras": base["ground_truth"]}.items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.3f}" if k in m else "-" for k in ("rot_err_deg", "trans_err_deg", "abs_rel", "view_spread_deg")) + " |")
    if args.run_dir:
        plot_curve(args.run_dir, args.png, base, rows["trained"])
        print(f"curve: {args.png}")


if __name__ == "__main__":
    main()
