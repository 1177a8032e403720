"""Building a model whose parameters are sharded over the ranks (DeepSpeed ZeRO-3) and filling it
from weight files, so that no rank ever holds the whole model, in host or device memory.

A :class:`Placement` says how a training engine wants its model built: on which ``device``, in
which ``dtype`` (the run's: bf16 on GPU, fp32 on CPU; frozen weights stay in it, DeepSpeed keeps
fp32 master copies of the trainable ones) and, under ZeRO-3, inside :meth:`Placement.construction`
(``deepspeed.zero.Init``): each module's parameters are partitioned as soon as that module is
constructed, so the largest transient is one module's parameters.

Filling (:func:`fill`): each key of a :class:`fourd.weights.WeightsFile` goes into its parameter:

* a ZeRO-3 partitioned parameter in DeepSpeed's plain layout (flattened, padded, rank ``r`` of
  ``n`` holding elements ``[r * s, (r + 1) * s)`` of it, ``s = ceil(numel / n)``) gets only this
  rank's slice, read from the file by itself (no communication, no full tensor anywhere);
* any other partitioned parameter (hpZ secondary partitions, NVMe offload) is gathered with
  ``GatheredParameters(modifier_rank=0)``: rank 0 reads the tensor, DeepSpeed broadcasts it;
* a parameter on the meta device is replaced by the tensor read, cast to ``dtype`` on ``device``;
* any other parameter or buffer is copied into.

Initialisation code that changes parameters after their module was constructed runs inside
:func:`gathered`, which is a no-op for ordinary parameters.

This module imports DeepSpeed only when a model is actually partitioned.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional

import torch
from torch import nn

from fourd.weights import WeightsFile

__all__ = ["Placement", "is_partitioned", "numel", "gathered", "fill"]


@dataclass(frozen=True)
class Placement:
    """How the trainable model is built (see the module docstring).

    ``device``: where parameters live (ZeRO-3: where each partition lives unless ``offload_param``
    puts it in host memory); ``dtype``: dtype of every floating parameter at construction;
    ``ds_config``: the complete DeepSpeed config (batch sizes filled in) when the parameters are
    partitioned at construction (ZeRO stage 3), else None.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    ds_config: Optional[Mapping[str, Any]] = None

    @property
    def sharded(self) -> bool:
        """True when the model is built partitioned (ZeRO-3)."""
        return self.ds_config is not None

    def construction(self) -> contextlib.AbstractContextManager:
        """Context for constructing the model: ``deepspeed.zero.Init`` (partitioning over the data-parallel
        group, offloading partitions as ``offload_param`` says) when sharded, else nothing."""
        if not self.sharded:
            return contextlib.nullcontext()
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo")
        config = {**self.ds_config, "bf16": {"enabled": self.dtype == torch.bfloat16}}
        # dtype=None: zero.Init then takes it from the config's bf16 section (0.19.8 turns an explicit
        # float32 into bf16 on accelerators without fp16, e.g. the CPU one)
        return deepspeed.zero.Init(config_dict_or_path=config, dtype=None)


def is_partitioned(param: torch.Tensor) -> bool:
    """True for a parameter that ZeRO-3 partitioned (its ``.data`` is empty outside a gather)."""
    return hasattr(param, "ds_id")


def numel(param: torch.Tensor) -> int:
    """Elements of the full parameter (also when ZeRO-3 partitioned it)."""
    return int(param.ds_numel) if is_partitioned(param) else param.numel()


@contextlib.contextmanager
def gathered(params: Iterable[torch.Tensor], modifier_rank: Optional[int] = 0) -> Iterator[None]:
    """Inside, the partitioned ones of ``params`` are whole on every rank; what rank ``modifier_rank``
    writes into them is kept on exit (None: read-only). A no-op when none is partitioned, so that
    initialisation code runs unchanged on ordinary models (every rank computes the same values
    from the same seeded RNG; rank 0's are kept)."""
    params = [p for p in params if is_partitioned(p)]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
        yield


def _own_slice(param: torch.Tensor) -> Optional[tuple[int, int]]:
    """``(start, count)`` of this rank's elements of a partitioned ``param`` in DeepSpeed's plain
    layout (see the module docstring), or None when the layout is another one."""
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    part = getattr(param, "ds_tensor", None)
    if part is None or getattr(param, "ds_secondary_tensor", None) is not None or getattr(part, "final_location", None) is not None:
        return None
    if param.ds_status != ZeroParamStatus.NOT_AVAILABLE:
        return None
    import torch.distributed as dist

    size = int(part.ds_numel)
    start = size * dist.get_rank(group=param.ds_process_group)
    if size * dist.get_world_size(group=param.ds_process_group) < param.ds_numel:
        return None
    return start, max(0, min(size, int(param.ds_numel) - start))


def _fill_partitioned(param: torch.Tensor, source: WeightsFile, key: str) -> None:
    own = _own_slice(param)
    with torch.no_grad():
        if own is not None:
            start, count = own
            if count:
                part = param.ds_tensor
                part.data[:count].copy_(source.flat_slice(key, start, start + count).to(device=part.device, dtype=part.dtype))
            return
        import torch.distributed as dist

        with gathered([param], modifier_rank=0):
            if dist.get_rank() == 0:
                param.data.copy_(source.tensor(key).reshape(param.shape))


def _replace(module: nn.Module, name: str, value: torch.Tensor) -> None:
    owner, _, leaf = name.rpartition(".")
    target = module.get_submodule(owner) if owner else module
    if leaf in target._parameters:
        target._parameters[leaf] = nn.Parameter(value, requires_grad=target._parameters[leaf].requires_grad)
    else:
        target._buffers[leaf] = value


def fill(module: nn.Module, source: WeightsFile, keys: Mapping[str, str], *, device: torch.device | str = "cpu",
         dtype: Optional[torch.dtype] = None) -> None:
    """Put tensor ``keys[name]`` of ``source`` into ``module``'s parameter or buffer ``name``, one at a
    time (see the module docstring). ``dtype``: the dtype of floating tensors that replace meta ones
    (others keep their dtype; copies take the target's). Meta tensors in ``source`` and meta targets
    with ``device="meta"`` are skipped (key inspection). Keys and shapes must have been checked
    (:func:`fourd.weights.check_state_dict`)."""
    targets = dict(module.named_parameters())
    targets.update(module.named_buffers())
    for name, key in keys.items():
        target = targets[name]
        if is_partitioned(target):
            _fill_partitioned(target, source, key)
            continue
        if target.is_meta and torch.device(device).type == "meta":
            continue  # key inspection on a meta model: nothing to read
        tensor = source.tensor(key)
        if tensor.is_meta:
            continue
        if target.is_meta:
            cast = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
            _replace(module, name, tensor.to(device=device, dtype=cast))
        else:
            with torch.no_grad():
                target.copy_(tensor.reshape(target.shape))
