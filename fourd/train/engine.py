"""One training-engine interface over two back ends: plain PyTorch (one process) and DeepSpeed ZeRO.

The loop (:mod:`fourd.train.loop`) builds the model as :attr:`EngineFactory.placement` says (device,
dtype; under ZeRO-3 partitioned at construction), then calls the factory on it and only talks to
the :class:`Engine`:

* ``engine.forward_module`` is what the task calls for the forward pass (the DeepSpeed engine or the
  module itself); ``engine.module`` is the bare model (for previews);
* ``engine.backward(loss)`` once per micro-batch (``accumulation`` of them per step); a
  non-finite loss poisons the step;
* ``engine.step()`` once per optimizer step: clips gradients and applies the update unless the loss
  or the gradient norm was non-finite on any rank (then nothing is applied and the LR schedule does
  not advance);
* ``engine.save(dir, client_state)`` / ``engine.load(dir)`` for the full optimizer state (called
  on every rank; the atomic layout around it lives in :mod:`fourd.train.checkpoint`);
* ``engine.export_safetensors(url, trainable_only, metadata)``: the weights in fp32 as one
  safetensors file, gathered one tensor at a time and written by rank 0 (never the whole model at once).

Optimizer: AdamW on the parameters with ``requires_grad`` only (frozen ones never enter it):
``torch.optim.AdamW``, or DeepSpeed's CPU Adam(W) when ZeRO offloads the optimizer states to host
memory; LR: warm-up + cosine (:mod:`fourd.train.schedule`). Precision (``launcher.precision``):
``"fp32"`` or ``"bf16"`` (CUDA only: every weight is built in bf16 - frozen ones stay so - with
fp32 master copies of the trainable ones, and forward passes under bf16 autocast).
Settings the run cannot honour (ZeRO stage, offload, precision) fail in :class:`EngineFactory`,
before any model is built, with one line naming the key and the allowed values.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional

import torch
from torch import nn

from fourd.sharded import Placement, gathered, is_partitioned
from fourd.train.schedule import build_lr_scheduler
from fourd.weights import SafetensorsWriter, model_shapes, read_state_dict, write_safetensors

__all__ = ["OptimConfig", "StepResult", "Engine", "PlainEngine", "DeepSpeedEngine", "EngineFactory", "build_engine", "resolve_precision",
           "check_deepspeed_config"]


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


PRECISIONS = ("auto", "bf16", "fp32")
ZERO_STAGES = (0, 1, 2, 3)
OFFLOAD_DEVICES = ("none", "cpu", "nvme")


def resolve_precision(precision: str, device: Optional[torch.device] = None) -> torch.dtype:
    """``launcher.precision``: ``"auto"`` -> bf16 on CUDA, fp32 elsewhere; ``"bf16"`` (CUDA with bf16
    only) / ``"fp32"`` as named. ``device``: where the run computes (default: CUDA when available)."""
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if precision not in PRECISIONS:
        raise ValueError(f"launcher.precision={precision!r} is not supported: allowed {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    if precision == "bf16" and not (cuda and torch.cuda.is_bf16_supported()):
        raise ValueError("launcher.precision=bf16 needs a CUDA GPU with bf16 support (bf16 autocast); allowed on this machine: auto, fp32")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def _offload(zero: Mapping[str, Any], what: str) -> str:
    node = zero.get(what) or {}
    return str(node.get("device", "none") if isinstance(node, Mapping) else node)


def check_deepspeed_config(ds_config: Mapping[str, Any]) -> None:
    """Raise a one-line ``ValueError`` naming the key and its allowed values when ``ds_config`` asks for
    something this engine cannot honour: a ZeRO stage outside 0-3, an offload device outside
    none / cpu / nvme, parameter offload below stage 3, optimizer offload at stage 0, NVMe without
    ``nvme_path`` or without DeepSpeed's async-I/O op, or fp16 (precision comes from ``launcher.precision``)."""
    zero = ds_config.get("zero_optimization") or {}
    stage = zero.get("stage", 0)
    if stage not in ZERO_STAGES:
        raise ValueError(f"deepspeed.zero_optimization.stage={stage!r} is not supported: allowed {', '.join(map(str, ZERO_STAGES))}")
    for what, needs in (("offload_optimizer", 1), ("offload_param", 3)):
        device = _offload(zero, what)
        key = f"deepspeed.zero_optimization.{what}.device"
        if device not in OFFLOAD_DEVICES:
            raise ValueError(f"{key}={device!r} is not supported: allowed {', '.join(OFFLOAD_DEVICES)}")
        if device != "none" and stage < needs:
            raise ValueError(f"{key}={device} needs deepspeed.zero_optimization.stage >= {needs} (got {stage}): allowed stages "
                             f"{', '.join(str(s) for s in ZERO_STAGES if s >= needs)}, or {key}=none")
        if device == "nvme":
            if not zero[what].get("nvme_path"):
                raise ValueError(f"{key}=nvme needs deepspeed.zero_optimization.{what}.nvme_path (a local NVMe directory)")
            from deepspeed.ops.op_builder import AsyncIOBuilder

            if not AsyncIOBuilder().is_compatible(verbose=False):
                raise ValueError(f"{key}=nvme needs DeepSpeed's async_io op (libaio-dev), not available here: allowed none, cpu")
    if (ds_config.get("fp16") or {}).get("enabled"):
        raise ValueError("deepspeed.fp16.enabled=true is not supported: precision comes from launcher.precision (allowed auto, bf16, fp32)")


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(module).__name__} has no trainable parameters (check the trainable-parameter patterns)")
    return params


def _adamw(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.AdamW:
    """torch AdamW, fused (one kernel, no full-size temporaries: the optimizer step's memory peak
    stays at the states) where every parameter is on the CPU or a CUDA device."""
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused)


def _uses_cpu_adam(ds_config: Mapping[str, Any]) -> bool:
    """True when the optimizer states are offloaded and DeepSpeed's CPU Adam should update them (as
    DeepSpeed requires unless ``zero_force_ds_cpu_optimizer: false`` allows torch AdamW there)."""
    zero = ds_config.get("zero_optimization") or {}
    return _offload(zero, "offload_optimizer") != "none" and ds_config.get("zero_force_ds_cpu_optimizer", True)


def _load_cpu_adam() -> None:
    """Build (JIT, cached in TORCH_EXTENSIONS_DIR) or load DeepSpeed's CPU Adam op; a one-line error says what it needs."""
    from deepspeed.accelerator import get_accelerator

    try:
        get_accelerator().create_op_builder("CPUAdamBuilder").load(verbose=False)
    except Exception as exc:  # the op builder raises anything from compiler errors to missing headers
        raise RuntimeError(
            f"deepspeed.zero_optimization.offload_optimizer uses DeepSpeed's CPU Adam, whose C++ op did not build ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}): it needs a C++17 compiler (g++), ninja and the Python headers "
            "(or a DeepSpeed installed with DS_BUILD_CPU_ADAM=1); or set deepspeed.zero_force_ds_cpu_optimizer=false to update "
            "the offloaded states with torch AdamW (slower)") from exc


def _fp32_spec(name: str, shape, dtype: torch.dtype) -> tuple[str, tuple[int, ...], torch.dtype]:
    return name, tuple(shape), torch.float32 if dtype.is_floating_point else dtype


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
    is_main: bool = True  # the rank that writes exports

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

    def export_safetensors(self, url: str, trainable_only: bool = False, metadata: Optional[dict[str, str]] = None) -> None:
        """Write the weights (keys of ``module.state_dict()``; only parameters with ``requires_grad`` when
        ``trainable_only``) as one safetensors file at ``url``, floating tensors in fp32 (trainable ones
        from the optimizer's fp32 masters). All ranks must call it; rank 0 writes, one tensor at a time
        (:class:`fourd.weights.SafetensorsWriter`: atomic)."""
        items = self._export_items(trainable_only)
        writer = SafetensorsWriter(url, [spec for spec, _ in items], metadata) if self.is_main else None
        try:
            for (name, _, _), read in items:
                tensor = read()
                if writer is not None:
                    writer.write(name, tensor.to(torch.float32) if tensor.is_floating_point() else tensor)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            writer.close()

    def _export_items(self, trainable_only: bool) -> list[tuple[tuple[str, tuple[int, ...], torch.dtype], Callable[[], Optional[torch.Tensor]]]]:
        """``[(spec, read)]``: each exported tensor's (name, shape, dtype) and a function returning it on
        the CPU on rank 0 (anything elsewhere; every rank calls every ``read`` in order)."""
        raise NotImplementedError


class PlainEngine(Engine):
    """Single-process engine: AdamW, gradient accumulation, clipping and non-finite step skipping.

    With a bf16 ``dtype`` the frozen weights stay in bf16 and the trainable ones are kept in fp32
    (the optimizer updates them in full precision; bf16 autocast runs the forward)."""

    def __init__(self, module: nn.Module, cfg: OptimConfig, device: torch.device, dtype: torch.dtype = torch.float32):
        self.module = module.to(device)
        self.forward_module = self.module
        self.device, self.dtype, self.accumulation = device, dtype, cfg.accumulation
        self.cfg = cfg
        self.params = _trainable(module)
        for p in self.params:
            p.data = p.data.float()
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

    def _export_items(self, trainable_only: bool):
        keep = {n for n, p in self.module.named_parameters() if p.requires_grad} if trainable_only else None
        state = {k: v for k, v in self.module.state_dict().items() if keep is None or k in keep}
        return [(_fp32_spec(k, v.shape, v.dtype), lambda v=v: v.detach().cpu()) for k, v in state.items()]


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO engine (stage from ``ds_config``) behind the :class:`Engine` interface.

    ``config``: the DeepSpeed config as :class:`EngineFactory` completes it (:func:`fill_ds_config`:
    batch size, accumulation, clipping and bf16 from ``cfg``, ``micro_batch`` and ``dtype``; the
    sequence-parallel settings of :func:`_sequence_parallel_config`). ``module``
    may come partitioned already (built under the ZeRO-3 placement); it is moved to ``device``
    otherwise. Optimizer: torch AdamW (``zero_allow_untested_optimizer``), or DeepSpeed's CPU
    Adam(W) when the optimizer states are offloaded. A non-finite loss is back-propagated
    multiplied by NaN so that every gradient is NaN: DeepSpeed's ZeRO optimizer then skips the step
    (its global-norm check, synchronised over ranks) and counts it; a non-finite gradient norm is
    skipped the same way.
    """

    CHECKPOINT_TAG = "deepspeed"

    def __init__(self, module: nn.Module, cfg: OptimConfig, config: Mapping[str, Any], device: torch.device, dtype: torch.dtype = torch.float32,
                 sequence_parallel: int = 1):
        import deepspeed
        import torch.distributed as dist

        from fourd.train.deepspeed_ops import announce_jit_builds

        self.cfg, self.device, self.dtype, self.accumulation = cfg, device, dtype, cfg.accumulation
        params = _trainable(module)
        if _uses_cpu_adam(config):
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, adamw_mode=True)
        else:
            optimizer = _adamw(params, cfg)
        scheduler = build_lr_scheduler(optimizer, cfg.warmup_steps, cfg.total_steps, cfg.min_lr_ratio, cfg.lr_schedule)
        announce_jit_builds(device)  # a CPU run may JIT-compile DeepSpeed's shm op first: say so (fourd/train/deepspeed_ops.py)
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
        mpu, self.grad_scale = _sequence_parallel_mpu(sequence_parallel, config)
        if not any(is_partitioned(p) for p in module.parameters()):
            module = module.to(device)
        self.ds, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler, config=config, mpu=mpu)
        self.module = self.ds.module
        self.forward_module = self.ds
        self.is_main = dist.get_rank() == 0

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

    def _export_items(self, trainable_only: bool):
        from deepspeed.utils import safe_get_full_fp32_param

        shapes = model_shapes(self.module)
        params = dict(self.module.named_parameters())

        def read(name: str) -> Optional[torch.Tensor]:
            param = params.get(name)
            if param is None:  # a persistent buffer: never partitioned
                return self.module.get_buffer(name).detach().cpu()
            full = safe_get_full_fp32_param(param) if param.requires_grad else None  # collective: every rank calls
            if full is not None:
                return full.detach().cpu()
            with gathered([param], modifier_rank=None):
                return param.detach().cpu().clone() if self.is_main else None

        names = [n for n in shapes if not trainable_only or (n in params and params[n].requires_grad)]
        dtypes = {n: (params[n].dtype if n in params else self.module.get_buffer(n).dtype) for n in names}
        return [(_fp32_spec(n, shapes[n], dtypes[n]), lambda n=n: read(n)) for n in names]


def fill_ds_config(ds_config: Mapping[str, Any], cfg: OptimConfig, micro_batch: int, dtype: torch.dtype) -> dict[str, Any]:
    """``ds_config`` completed from the run: micro-batch, accumulation, clipping, bf16 (and
    ``zero_allow_untested_optimizer`` for torch AdamW); ``train_batch_size`` is left to DeepSpeed."""
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


def _sequence_parallel_config(size: int, config: dict[str, Any]) -> None:
    """Check (stage >= 1) and complete ``config`` for ``size`` ranks per sequence-parallel group; see
    :func:`_sequence_parallel_mpu` for why ZeRO-3 pins ``reduce_scatter`` on."""
    if size == 1:
        return
    stage = int(config["zero_optimization"].get("stage", 0))
    if stage < 1:
        raise ValueError(f"train.sequence_parallel={size} needs ZeRO stage 1, 2 or 3 (deepspeed=zero2 or zero3)")
    if stage == 3:
        config["zero_optimization"]["reduce_scatter"] = True


def _sequence_parallel_mpu(size: int, config: Mapping[str, Any]) -> tuple[Any, int]:
    """DeepSpeed's ``mpu`` for ``size`` ranks per sequence-parallel group (None when ``size`` is 1)
    and the factor the loss is back-propagated with.

    Each rank's gradients are the share of its tokens (:mod:`video4d.model.sequence_parallel`), so
    ZeRO must SUM over the sequence-parallel ranks and average over the data-parallel replicas.
    ZeRO-1/2 do (they divide by ``world / size``); DeepSpeed 0.19's ZeRO-3 reduce-scatter divides by
    the whole world, so with stage 3 the loss is scaled by ``size`` and ``reduce_scatter`` is pinned
    on (the path this holds for). tests/test_sequence_parallel.py checks both stages against one rank.
    ZeRO-3 parameters stay partitioned over the whole world (data x sequence ranks), as
    ``deepspeed.zero.Init`` builds them (:class:`fourd.sharded.Placement`).
    """
    if size == 1:
        return None, 1
    from fourd.train.distributed import sequence_parallel_groups

    return sequence_parallel_groups(size), size if int(config["zero_optimization"]["stage"]) == 3 else 1


class EngineFactory:
    """Checks the engine settings, says how the model must be built (:attr:`placement`) and builds the
    :class:`Engine` around it (``factory(model)``).

    ``kind``: ``"plain"`` or ``"deepspeed"`` (``launcher.engine``); ``dtype``: the run's precision
    (:func:`resolve_precision`); ``ds_config``: the DeepSpeed config (``deepspeed=`` group; needed for
    ``"deepspeed"``); ``sequence_parallel``: ranks per DeepSpeed-Ulysses group (see
    :class:`fourd.train.distributed.SequenceParallelGroups`; needs ZeRO stage >= 1). Everything the run
    cannot honour raises here, before any model is built (:func:`check_deepspeed_config`; with offloaded
    optimizer states DeepSpeed's CPU Adam op is built or loaded here too).
    """

    KINDS = ("plain", "deepspeed")

    def __init__(self, kind: str, cfg: OptimConfig, *, device: torch.device, dtype: torch.dtype, micro_batch: int,
                 ds_config: Optional[Mapping[str, Any]] = None, sequence_parallel: int = 1):
        if kind not in self.KINDS:
            raise ValueError(f"launcher.engine={kind!r} is not supported: allowed {', '.join(self.KINDS)}")
        self.kind, self.cfg, self.device, self.dtype = kind, cfg, device, dtype
        self.sequence_parallel = sequence_parallel
        self.ds_config: Optional[dict[str, Any]] = None
        if kind == "plain":
            world = int(os.environ.get("WORLD_SIZE", 1))
            if world > 1:
                raise ValueError(f"launcher=plain runs one process, but WORLD_SIZE={world}: use launcher=deepspeed")
            self.placement = Placement(device, dtype)
            return
        if ds_config is None:
            raise ValueError("launcher=deepspeed needs a DeepSpeed config (the 'deepspeed' config group)")
        check_deepspeed_config(ds_config)
        self.ds_config = fill_ds_config(ds_config, cfg, micro_batch, dtype)
        _sequence_parallel_config(sequence_parallel, self.ds_config)
        if _uses_cpu_adam(self.ds_config):
            _load_cpu_adam()
        sharded = int(self.ds_config["zero_optimization"].get("stage", 0)) == 3
        self.placement = Placement(device, dtype, self.ds_config if sharded else None)

    def __call__(self, module: nn.Module) -> Engine:
        if self.kind == "plain":
            return PlainEngine(module, self.cfg, self.device, self.dtype)
        return DeepSpeedEngine(module, self.cfg, self.ds_config, self.device, self.dtype, self.sequence_parallel)


def build_engine(kind: str, module: nn.Module, cfg: OptimConfig, *, device: torch.device, dtype: torch.dtype, micro_batch: int,
                 ds_config: Optional[Mapping[str, Any]] = None, sequence_parallel: int = 1) -> Engine:
    """The :class:`Engine` of :class:`EngineFactory` around an already built ``module`` (tests; training
    runs build the model as the factory's placement says)."""
    return EngineFactory(kind, cfg, device=device, dtype=dtype, micro_batch=micro_batch, ds_config=ds_config,
                         sequence_parallel=sequence_parallel)(module)
