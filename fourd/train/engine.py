"""One training-engine interface over two back ends: plain PyTorch (one process) and DeepSpeed ZeRO.

The loop (:mod:`fourd.train.loop`) only talks to :class:`Engine`:

* ``engine.forward_module`` is what the task calls for the forward pass (the DeepSpeed engine or the
  module itself); ``engine.module`` is the bare model (for previews and exports);
* ``engine.backward(loss)`` once per micro-batch (``accumulation`` of them per step); a
  non-finite loss poisons the step;
* ``engine.step()`` once per optimizer step: clips gradients and applies the update unless the loss
  or the gradient norm was non-finite on any rank (then nothing is applied and the LR schedule does
  not advance);
* ``engine.save(dir, client_state)`` / ``engine.load(dir)`` for the full optimizer state (called
  on every rank; the atomic layout around it lives in :mod:`fourd.train.checkpoint`);
* ``engine.export_state_dict(trainable_only)``: the (gathered) weights on rank 0.

Optimizer: ``torch.optim.AdamW`` on the parameters with ``requires_grad``; LR: warm-up + cosine
(:mod:`fourd.train.schedule`). Precision: ``"fp32"`` or ``"bf16"`` (autocast on CUDA; DeepSpeed
additionally keeps bf16 weights with fp32 master copies).
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Mapping, Optional

import torch
from torch import nn

from fourd.train.schedule import build_lr_scheduler
from fourd.weights import read_state_dict, write_safetensors

__all__ = ["OptimConfig", "StepResult", "Engine", "PlainEngine", "DeepSpeedEngine", "build_engine", "resolve_precision"]


@dataclass
class OptimConfig:
    """Optimizer, LR schedule and update settings (the ``optim`` config group).

    ``lr``: peak learning rate; ``betas``, ``eps``, ``weight_decay``: AdamW's; ``warmup_steps``,
    ``min_lr_ratio``: warm-up + cosine to ``min_lr_ratio * lr`` at ``total_steps`` (the run length,
    filled from the loop config), or warm-up + constant LR with ``lr_schedule="constant"``; ``grad_clip``: max global L2 norm (0 = off);
    ``accumulation``: micro-batches per optimizer step.
    """

    lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    lr_schedule: str = "cosine"
    grad_clip: float = 1.0
    accumulation: int = 1
    total_steps: int = 1000


@dataclass
class StepResult:
    """Outcome of one optimizer step: ``applied`` (False = skipped) and the global ``grad_norm`` (pre-clip, may be inf/nan)."""

    applied: bool
    grad_norm: float


def resolve_precision(precision: str) -> torch.dtype:
    """``"auto"`` -> bf16 on CUDA, fp32 on CPU; ``"bf16"`` / ``"fp32"`` as named."""
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    table = {"bf16": torch.bfloat16, "fp32": torch.float32}
    if precision not in table:
        raise ValueError(f"unknown precision {precision!r}; use 'auto', 'bf16' or 'fp32'")
    return table[precision]


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(module).__name__} has no trainable parameters (check the trainable-parameter patterns)")
    return params


def _adamw(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


class Engine:
    """Common interface; see the module docstring. Subclasses set the attributes below.

    ``module``: the model; ``forward_module``: callable for the forward pass; ``device``;
    ``dtype``: compute dtype (autocast dtype when bf16); ``accumulation``: micro-batches per step.
    """

    module: nn.Module
    forward_module: Any
    device: torch.device
    dtype: torch.dtype
    accumulation: int

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for forward passes: bf16 autocast on CUDA when the dtype is bf16, else nothing."""
        if self.dtype == torch.bfloat16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train(self, mode: bool = True) -> None:
        """Set train/eval mode of the model."""
        self.module.train(mode)

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate gradients of one micro-batch's scalar ``loss`` (unscaled; 1/accumulation applied here)."""
        raise NotImplementedError

    def step(self) -> StepResult:
        """Finish an optimizer step after ``accumulation`` backward calls."""
        raise NotImplementedError

    def lr(self) -> float:
        """Current learning rate of the first parameter group."""
        raise NotImplementedError

    def save(self, directory: str, client_state: Mapping[str, Any]) -> None:
        """Write model, optimizer and LR state plus ``client_state`` under ``directory`` (all ranks call)."""
        raise NotImplementedError

    def load(self, directory: str) -> dict[str, Any]:
        """Restore what :meth:`save` wrote; returns the ``client_state``."""
        raise NotImplementedError

    def export_state_dict(self, trainable_only: bool = False) -> dict[str, torch.Tensor]:
        """Full (gathered) weights, CPU tensors keyed like ``module.state_dict()``, on rank 0 ({} elsewhere).

        ``trainable_only`` keeps parameters with ``requires_grad`` only. All ranks must call it.
        """
        raise NotImplementedError


class PlainEngine(Engine):
    """Single-process engine: AdamW, gradient accumulation, clipping and non-finite step skipping."""

    def __init__(self, module: nn.Module, cfg: OptimConfig, device: torch.device, dtype: torch.dtype = torch.float32):
        self.module = module.to(device)
        self.forward_module = self.module
        self.device, self.dtype, self.accumulation = device, dtype, cfg.accumulation
        self.cfg = cfg
        self.params = _trainable(module)
        self.optimizer = _adamw(self.params, cfg)
        self.scheduler = build_lr_scheduler(self.optimizer, cfg.warmup_steps, cfg.total_steps, cfg.min_lr_ratio, cfg.lr_schedule)
        self._poisoned = False

    def backward(self, loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            self._poisoned = True
            return
        (loss / self.accumulation).backward()

    def step(self) -> StepResult:
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm, error_if_nonfinite=False))
        applied = not self._poisoned and math.isfinite(norm)
        if applied:
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._poisoned = False
        return StepResult(applied=applied, grad_norm=norm)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def save(self, directory: str, client_state: Mapping[str, Any]) -> None:
        write_safetensors(os.path.join(directory, "model.safetensors"), self.module.state_dict())
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "client": dict(client_state)}, os.path.join(directory, "engine_state.pt"))

    def load(self, directory: str) -> dict[str, Any]:
        state = read_state_dict(os.path.join(directory, "model.safetensors"), what="checkpoint model file")
        self.module.load_state_dict(state)
        engine_state = torch.load(os.path.join(directory, "engine_state.pt"), map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(engine_state["optimizer"])
        self.scheduler.load_state_dict(engine_state["scheduler"])
        return engine_state["client"]

    def export_state_dict(self, trainable_only: bool = False) -> dict[str, torch.Tensor]:
        keep = {n for n, p in self.module.named_parameters() if p.requires_grad} if trainable_only else None
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items() if keep is None or k in keep}


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO engine (stage from ``ds_config``) behind the :class:`Engine` interface.

    ``ds_config``: a DeepSpeed config dict; batch size, accumulation, clipping and bf16 are filled in
    here from ``cfg``, ``micro_batch`` and ``dtype`` (values given there are overwritten). Uses torch
    AdamW (``zero_allow_untested_optimizer``). A non-finite loss is back-propagated multiplied by NaN
    so that every gradient is NaN: DeepSpeed's ZeRO optimizer then skips the step (its global-norm
    check, synchronised over ranks) and counts it; a non-finite gradient norm is skipped the same way.
    """

    CHECKPOINT_TAG = "deepspeed"

    def __init__(self, module: nn.Module, cfg: OptimConfig, ds_config: Mapping[str, Any], micro_batch: int, device: torch.device, dtype: torch.dtype = torch.float32,
                 sequence_parallel: int = 1):
        import deepspeed

        from fourd.train.deepspeed_ops import announce_jit_builds

        self.cfg, self.device, self.dtype, self.accumulation = cfg, device, dtype, cfg.accumulation
        config = _fill_ds_config(ds_config, cfg, micro_batch, dtype)
        params = _trainable(module)
        optimizer = _adamw(params, cfg)
        scheduler = build_lr_scheduler(optimizer, cfg.warmup_steps, cfg.total_steps, cfg.min_lr_ratio, cfg.lr_schedule)
        announce_jit_builds(device)  # a CPU run may JIT-compile DeepSpeed's shm op first: say so (fourd/train/deepspeed_ops.py)
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
        mpu, self.grad_scale = _sequence_parallel_mpu(sequence_parallel, config)
        self.ds, _, _, _ = deepspeed.initialize(model=module.to(device), optimizer=optimizer, lr_scheduler=scheduler, config=config, mpu=mpu)
        self.module = self.ds.module
        self.forward_module = self.ds
        self.zero_stage = int(config["zero_optimization"].get("stage", 0))

    def train(self, mode: bool = True) -> None:
        self.ds.train(mode)

    def backward(self, loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            loss = loss * float("nan")
        self.ds.backward(loss * self.grad_scale if self.grad_scale != 1 else loss)
        if not self.ds.is_gradient_accumulation_boundary():
            self.ds.step()

    def step(self) -> StepResult:
        if not self.ds.is_gradient_accumulation_boundary():
            raise RuntimeError(f"step() called before {self.accumulation} backward() calls")
        self.ds.step()
        norm = self.ds.get_global_grad_norm()
        return StepResult(applied=bool(self.ds.was_step_applied()), grad_norm=float("nan") if norm is None else float(norm))

    def lr(self) -> float:
        return float(self.ds.get_lr()[0])

    def save(self, directory: str, client_state: Mapping[str, Any]) -> None:
        self.ds.save_checkpoint(directory, tag=self.CHECKPOINT_TAG, client_state=dict(client_state), save_latest=False)

    def load(self, directory: str) -> dict[str, Any]:
        path, client = self.ds.load_checkpoint(directory, tag=self.CHECKPOINT_TAG, load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {directory}/{self.CHECKPOINT_TAG}")
        return client

    def export_state_dict(self, trainable_only: bool = False) -> dict[str, torch.Tensor]:
        import deepspeed
        import torch.distributed as dist

        is_main = dist.get_rank() == 0
        out: dict[str, torch.Tensor] = {}
        for name, param in self._named_params(trainable_only):
            if self.zero_stage == 3:
                with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                    if is_main:
                        out[name] = param.detach().cpu().clone()
            elif is_main:
                out[name] = param.detach().cpu().clone()
        if is_main and not trainable_only:
            params = dict(self.module.named_parameters())
            out.update({k: v.detach().cpu() for k, v in self.module.state_dict().items() if k not in params})
        return out

    def _named_params(self, trainable_only: bool) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.module.named_parameters() if p.requires_grad or not trainable_only)


def _fill_ds_config(ds_config: Mapping[str, Any], cfg: OptimConfig, micro_batch: int, dtype: torch.dtype) -> dict[str, Any]:
    config = dict(ds_config)
    config["zero_optimization"] = dict(config.get("zero_optimization", {}))
    config.update(
        train_micro_batch_size_per_gpu=int(micro_batch),
        gradient_accumulation_steps=int(cfg.accumulation),
        gradient_clipping=float(cfg.grad_clip),
        zero_allow_untested_optimizer=True,
        bf16={"enabled": dtype == torch.bfloat16},
    )
    config.pop("train_batch_size", None)
    return config


def _sequence_parallel_mpu(size: int, config: dict[str, Any]) -> tuple[Any, int]:
    """DeepSpeed's ``mpu`` for ``size`` ranks per sequence-parallel group (None when ``size`` is 1)
    and the factor the loss is back-propagated with.

    Each rank's gradients are the share of its tokens (:mod:`video4d.model.sequence_parallel`), so
    ZeRO must SUM over the sequence-parallel ranks and average over the data-parallel replicas.
    ZeRO-1/2 do (they divide by ``world / size``); DeepSpeed 0.19's ZeRO-3 reduce-scatter divides by
    the whole world, so with stage 3 the loss is scaled by ``size`` and ``reduce_scatter`` is pinned
    on (the path this holds for). tests/test_sequence_parallel.py checks both stages against one rank.
    """
    if size == 1:
        return None, 1
    zero = config["zero_optimization"]
    if int(zero.get("stage", 0)) < 1:
        raise ValueError(f"train.sequence_parallel={size} needs ZeRO stage 1, 2 or 3 (deepspeed=zero2 or zero3)")
    from fourd.train.distributed import sequence_parallel_groups

    if int(zero["stage"]) == 3:
        zero["reduce_scatter"] = True
        return sequence_parallel_groups(size), size
    return sequence_parallel_groups(size), 1


def build_engine(kind: str, module: nn.Module, cfg: OptimConfig, *, device: torch.device, dtype: torch.dtype, micro_batch: int, ds_config: Optional[Mapping[str, Any]] = None,
                 sequence_parallel: int = 1) -> Engine:
    """``kind="plain"`` -> :class:`PlainEngine`; ``kind="deepspeed"`` -> :class:`DeepSpeedEngine` (needs ``ds_config``;
    ``sequence_parallel`` > 1: DeepSpeed-Ulysses groups of that many ranks, see :class:`fourd.train.distributed.SequenceParallelGroups`)."""
    if kind == "plain":
        world = int(os.environ.get("WORLD_SIZE", 1))
        if world > 1:
            raise ValueError(f"launcher=plain runs one process, but WORLD_SIZE={world}: use launcher=deepspeed")
        return PlainEngine(module, cfg, device, dtype)
    if kind == "deepspeed":
        if ds_config is None:
            raise ValueError("launcher=deepspeed needs a DeepSpeed config (the 'deepspeed' config group)")
        return DeepSpeedEngine(module, cfg, ds_config, micro_batch, device, dtype, sequence_parallel)
    raise ValueError(f"unknown engine {kind!r}; use 'plain' or 'deepspeed'")
