"""The generic training loop shared by the video model and the reconstructor.

What is model-specific lives in a :class:`Task`; the loop does the rest: seeding, resume,
gradient accumulation, non-finite step skipping (via the engine) and counting, the progressive
schedule hook (``task.on_step``), checkpoints, previews, metrics and the final export. Batches come
from the task's :class:`~fourd.data.loader.TaskData` through a :class:`~fourd.data.loader.StepLoader`
(``train.loader``: DataLoader workers; micro-batches a pure function of step and data-parallel rank).

Determinism: every rank seeds python/numpy/torch with ``seed + r`` and owns a ``torch.Generator``
(``"loss"``, seeded ``seed * 1000 + r``) that the task draws noise from (``r``: the data-parallel
rank, so the ranks of a sequence-parallel group draw the same numbers); all of them and the
loader's consumed data position are in the checkpoints, so a resumed fp32 run repeats the
uninterrupted run's losses exactly.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Protocol

import torch
from torch import nn

from fourd.data.loader import LoaderConfig, StepLoader, TaskData
from fourd.sharded import Placement
from fourd.train.checkpoint import SETTINGS_KEY, CheckpointManager, recorded_settings, settings_changes
from fourd.train.distributed import DistEnv, all_reduce_mean, barrier
from fourd.train.engine import Engine
from fourd.train.observe import Observer
from fourd.train.rng import capture_rng, restore_rng, seed_everything

__all__ = ["LoopConfig", "DebugConfig", "Task", "TrainResult", "train"]

log = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    """Run length and bookkeeping (the ``train`` config node).

    ``steps``: optimizer steps in total; ``micro_batch``: samples per rank per micro-batch;
    ``seed``; ``log_every``: steps between log lines; ``checkpoint_every``: steps between
    checkpoints (0 = only at the end); ``keep_last``: complete checkpoints kept (0 = all);
    ``resume``: ``"auto"`` (newest complete checkpoint of this run dir, if any), ``"none"`` or a
    checkpoint directory; ``resume_allow_changes``: dotted config keys (or their parents) whose
    values may differ from those the resumed checkpoint recorded (default ``[train.steps]``: a
    finished run may be trained longer, its LR schedule then follows the new length; any other
    change stops an automatic resume, :func:`train`); ``preview_every``: steps between sample grids (0 = off);
    ``export``: ``"full"``, ``"trainable"``, ``"both"`` or ``"none"`` (safetensors written at the
    end); ``progress``: show the progress bar; ``loader``: :class:`~fourd.data.loader.LoaderConfig`;
    ``sequence_parallel``: ranks that split one sample's tokens (DeepSpeed-Ulysses; 1 = off; must
    divide the world size and the model's head count).
    """

    steps: int = 1000
    micro_batch: int = 1
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_last: int = 3
    resume: Optional[str] = "auto"
    resume_allow_changes: List[str] = field(default_factory=lambda: ["train.steps"])
    preview_every: int = 0
    export: str = "full"
    progress: bool = True
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    sequence_parallel: int = 1


@dataclass
class DebugConfig:
    """Fault injection for tests (all off by default).

    ``stop_after_step``: exit the process hard (``os._exit``, no cleanup) right after that step
    (and after its checkpoint, if one is due); ``crash_in_save_at_step``: exit hard in the middle
    of that step's checkpoint save (files written, not committed); ``nan_loss_at_steps``: 1-based
    steps whose loss is replaced by NaN on rank 0.
    """

    stop_after_step: Optional[int] = None
    crash_in_save_at_step: Optional[int] = None
    nan_loss_at_steps: List[int] = field(default_factory=list)


class Task(Protocol):
    """What the loop needs from a model family (the video model, later the reconstructor)."""

    def build_model(self, placement: Optional[Placement] = None) -> nn.Module:
        """The model with its trainable parameters selected (``requires_grad``), built as ``placement``
        says (device, dtype; under ZeRO-3 partitioned at construction: no rank holds it whole).
        Auxiliary frozen modules (VAE, text encoder, loss networks) are built outside that placement."""

    def on_step(self, step: int) -> None:
        """Called before optimizer step ``step`` (0-based): progressive schedules switch here."""

    def data(self, micro_batch: int) -> TaskData:
        """The training data (samples keyed by global index and step; :mod:`fourd.data.loader`) for
        micro-batches of ``micro_batch`` samples."""

    def loss(self, model: Callable, batch: Any, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of ``batch`` and extra stats; random numbers from ``generator``."""

    def batch_size_and_tokens(self, batch: Any) -> tuple[int, int]:
        """Samples and model tokens in ``batch`` (for throughput)."""

    def preview(self, model: nn.Module, step: int) -> Optional[torch.Tensor]:
        """An image grid ``[3, H, W]`` in ``[0, 1]`` (called on every rank), or None."""

    def export_metadata(self) -> dict[str, str]:
        """String metadata stored in exported safetensors (e.g. the model config as JSON)."""


@dataclass
class TrainResult:
    """Summary of a finished run: final ``step``, ``skipped_steps``, ``losses`` of the steps run in
    this process (step -> loss), ``checkpoint`` path and ``exports`` (paths written)."""

    step: int
    skipped_steps: int
    losses: dict[int, float]
    checkpoint: Optional[str]
    exports: list[str]


def _hard_exit(reason: str) -> None:
    log.warning("debug: exiting hard (%s)", reason)
    logging.shutdown()
    os._exit(17)


def _check_settings(path: str, settings: Mapping[str, Any], cfg: LoopConfig, run_dir: str) -> None:
    """Compare the settings checkpoint ``path`` recorded with this run's: with ``resume=auto`` a change
    outside ``cfg.resume_allow_changes`` raises (two runs would mix in one folder); a checkpoint named
    explicitly resumes with a warning listing the changes."""
    saved = recorded_settings(path)
    if saved is None:
        log.warning("checkpoint %s records no settings (written before they were recorded): resuming without comparing them", path)
        return
    changes = settings_changes(saved, settings, cfg.resume_allow_changes)
    if not changes:
        allowed = settings_changes(saved, settings)
        if allowed:
            log.info("resuming from %s with changes train.resume_allow_changes allows: %s", path, "; ".join(allowed))
        return
    listing = "; ".join(changes[:8]) + (f" (and {len(changes) - 8} more)" if len(changes) > 8 else "")
    if cfg.resume == "auto":
        raise ValueError(f"run folder {run_dir} holds checkpoints of a run with other settings ({listing}): resuming would mix two "
                         "runs. Use a new run folder (RUN_DIR), start this folder over with train.resume=none, or continue the run "
                         "with these changes on purpose: train.resume_allow_changes=[train.steps,<keys>]")
    log.warning("resuming from %s, named by train.resume, whose settings differ: %s", path, listing)


def train(task: Task, make_engine: Callable[[nn.Module], Engine], cfg: LoopConfig, run_dir: str, env: DistEnv, debug: DebugConfig = DebugConfig(),
          placement: Optional[Placement] = None, settings: Optional[Mapping[str, Any]] = None) -> TrainResult:
    """Run (or resume) training of ``task`` until ``cfg.steps`` optimizer steps are done.

    ``settings``: the run's configuration as dotted key -> value (JSON values), recorded in every
    checkpoint and compared with the resumed checkpoint's before any model is built
    (:func:`_check_settings`); None records and compares nothing.

    ``task.build_model(placement)`` builds the model (default placement: CPU, fp32; the engine
    moves it), then ``make_engine(model)`` the :class:`Engine` (its optimizer config decides
    accumulation; :class:`~fourd.train.engine.EngineFactory` gives both).
    ``run_dir``: shared by all ranks; checkpoints go to ``<run_dir>/checkpoints``, exports to
    ``<run_dir>/export``, metrics/TensorBoard/samples as in :mod:`fourd.train.observe`.
    """
    ckpts = CheckpointManager(os.path.join(run_dir, "checkpoints"), env, cfg.keep_last)
    resume_path = ckpts.resolve(cfg.resume)  # verified before any model is built: a damaged file fails in seconds
    if resume_path is not None and settings is not None:
        _check_settings(resume_path, settings, cfg, run_dir)
    seed_everything(cfg.seed + env.dp_rank)  # by data-parallel rank: a sequence-parallel group draws alike
    model = task.build_model(placement or Placement())
    engine = make_engine(model)
    generator = torch.Generator(device=env.device).manual_seed(cfg.seed * 1000 + env.dp_rank)
    generators = {"loss": generator}
    step, skipped, nonfinite_losses, samples_seen = 0, 0, 0, 0
    data = StepLoader(task.data(cfg.micro_batch), cfg.micro_batch, engine.accumulation, env.dp_rank, env.dp_size, cfg.loader, seed=cfg.seed)
    if resume_path is not None:
        loaded = ckpts.load(resume_path, engine)
        step, skipped = loaded.trainer["step"], loaded.trainer["skipped_steps"]
        nonfinite_losses, samples_seen = loaded.trainer["nonfinite_losses"], loaded.trainer["samples_seen"]
        if loaded.rank_state is not None:
            restore_rng(loaded.rank_state["rng"], generators)
            data.load_state_dict(loaded.rank_state["data"])
        log.info("resumed from %s at step %d", resume_path, step)
    observer = Observer(run_dir, env.is_main, cfg.steps, step, cfg.log_every, cfg.progress)
    losses: dict[int, float] = {}
    last_ckpt = resume_path
    engine.train()
    while step < cfg.steps:
        task.on_step(step)
        t0 = time.perf_counter()
        micro_losses, samples, tokens, data_wait = [], 0, 0, 0.0
        for _ in range(engine.accumulation):
            t_data = time.perf_counter()
            batch = data.next(engine.device)
            data_wait += time.perf_counter() - t_data
            with engine.autocast():
                loss, stats = task.loss(engine.forward_module, batch, generator)
            if step + 1 in debug.nan_loss_at_steps and env.is_main:
                loss = loss * float("nan")
            engine.backward(loss)
            micro_losses.append(float(loss.detach()))
            n, t = task.batch_size_and_tokens(batch)
            samples, tokens = samples + n, tokens + t
        result = engine.step()
        step += 1
        mean_loss, samples, tokens, bad_losses = all_reduce_mean([sum(micro_losses) / len(micro_losses), samples, tokens, sum(not math.isfinite(x) for x in micro_losses)])
        world = env.dp_size  # the ranks of a sequence-parallel group count the same samples
        samples, tokens, bad_losses = round(samples * world), round(tokens * world), round(bad_losses * world)
        skipped += int(not result.applied)
        nonfinite_losses += bad_losses
        samples_seen += samples
        losses[step] = mean_loss
        elapsed = max(time.perf_counter() - t0, 1e-9)
        observer.step(step, {
            "loss": mean_loss, "lr": engine.lr(), "grad_norm": result.grad_norm, "skipped_steps": skipped,
            "nonfinite_losses": nonfinite_losses, "step_time_s": elapsed, "samples_per_s": samples / elapsed, "tokens_per_s": tokens / elapsed,
            "data_wait_s": data_wait, "data_skipped": data.skipped,
            **{k: float(v) for k, v in stats.items() if k != "loss"},
        })
        if (cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0) or step == cfg.steps:
            crash = (lambda: _hard_exit(f"crash in save at step {step}")) if debug.crash_in_save_at_step == step else None
            trainer = {"skipped_steps": skipped, "nonfinite_losses": nonfinite_losses, "samples_seen": samples_seen,
                       **({SETTINGS_KEY: dict(settings)} if settings is not None else {})}
            last_ckpt = ckpts.save(step, engine, trainer, {"rng": capture_rng(generators), "data": data.state_dict()}, before_commit=crash)
        if cfg.preview_every > 0 and step % cfg.preview_every == 0:
            _preview(task, engine, observer, step)
        if debug.stop_after_step == step:
            _hard_exit(f"stop after step {step}")
    data.close()
    exports = _export(task, engine, cfg.export, os.path.join(run_dir, "export"), env)
    observer.close()
    barrier()
    return TrainResult(step=step, skipped_steps=skipped, losses=losses, checkpoint=last_ckpt, exports=exports)


def _preview(task: Task, engine: Engine, observer: Observer, step: int) -> None:
    """Sample grid with the RNGs put back afterwards, so previews never change the training run."""
    rng = capture_rng()
    engine.train(False)
    with torch.no_grad(), engine.autocast():
        image = task.preview(engine.module, step)
    engine.train(True)
    restore_rng(rng)
    if image is not None:
        observer.image(step, "preview", image)


def _export(task: Task, engine: Engine, mode: str, directory: str, env: DistEnv) -> list[str]:
    """Write ``model.safetensors`` (full) and/or ``model_trainable.safetensors`` (fp32; rank 0 writes,
    one gathered tensor at a time)."""
    variants = {"full": [False], "trainable": [True], "both": [False, True], "none": []}
    if mode not in variants:
        raise ValueError(f"unknown export mode {mode!r}; use 'full', 'trainable', 'both' or 'none'")
    paths = []
    for trainable_only in variants[mode]:
        path = os.path.join(directory, "model_trainable.safetensors" if trainable_only else "model.safetensors")
        engine.export_safetensors(path, trainable_only, metadata={**task.export_metadata(), "content": "trainable" if trainable_only else "full"})
        if env.is_main:
            log.info("exported %s", path)
        paths.append(path)
    return paths
