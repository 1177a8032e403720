"""Building the 4D DiT and loading official Wan2.1 (or diffusers-format) weights into it.

Weights are read through fsspec one tensor at a time (:class:`fourd.weights.WeightsFile`: a single
safetensors file, a sharded checkpoint by its ``*.safetensors.index.json`` or directory, or a ``.pt``
file); keys and shapes are checked against the model from the files' headers before any tensor is
read. Without a :class:`fourd.sharded.Placement` that partitions it, the model is built on the meta
device and each tensor is assigned in the requested dtype on the requested device (peak: the model
plus one tensor). With a ZeRO-3 placement it is built under ``deepspeed.zero.Init`` in the
training dtype and every rank fills only its own slices (:func:`fourd.sharded.fill`).
Loading is strict: missing, unexpected or mis-shaped keys raise
:class:`fourd.weights.StateDictMismatchError` naming them; the only keys allowed to be missing are
the new layers of the sequential/parallel variants, which are then initialised (see
:meth:`WanDiT4D.reset_new_layers`).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import torch

from fourd.sharded import Placement, fill
from fourd.weights import StateDictMismatchError, WeightsFile, check_state_dict, config_from_metadata, config_metadata, resolve_dtype
from video4d.model.config import INITS, DiTConfig, resolve_config
from video4d.model.keymap import to_official
from video4d.model.variants import is_new_layer_key
from video4d.model.wan import WanDiT4D

__all__ = ["load_dit", "load_weights", "dit_metadata", "METADATA_KEY"]

METADATA_KEY = "dit_config"  # safetensors metadata entry holding the config JSON

Weights = Union[str, Mapping[str, torch.Tensor], WeightsFile]


def _checked_keys(model: WanDiT4D, source: WeightsFile, described: str) -> tuple[dict[str, str], list[str]]:
    """``({model key: file key}, missing new-layer keys)`` after the strict key / shape check."""
    names = to_official({k: k for k in source.keys()})
    meta = source.meta()
    missing, _ = check_state_dict(model, {k: meta[v] for k, v in names.items()}, allow_missing=is_new_layer_key, source=described)
    return names, missing


def load_weights(
    model: WanDiT4D,
    state: Weights,
    *,
    init: str = "official",
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    source: str = "state dict",
) -> list[str]:
    """Put ``state`` (a URL, an opened :class:`WeightsFile` or a state dict; official, diffusers or
    prefixed keys) into ``model``'s parameters: meta parameters are replaced by the tensors cast to
    ``dtype`` on ``device``, ZeRO-3 partitioned ones get this rank's slices, others are copied into.
    New variant layers absent from ``state`` are initialised with ``init`` (created on ``device``
    first when on meta). Returns those missing keys.
    """
    state = WeightsFile.of(state, "DiT weights file")
    cfg = model.config
    names, missing = _checked_keys(model, state, f"{source} (DiT {cfg.attention_variant} variant, dim {cfg.dim}, {cfg.num_layers} layers)")
    fill(model, state, names, device=device, dtype=dtype)
    prefixes = {id(m): n for n, m in model.named_modules()}
    fresh = []
    for layer in model.new_layers():
        absent = [f"{prefixes[id(layer)]}.{n}" in missing for n, _ in layer.named_parameters()]
        if any(absent) and not all(absent):
            raise StateDictMismatchError(f"{source} holds only some parameters of a new {type(layer).__name__} layer")
        if absent and all(absent) and str(torch.device(device)) != "meta":
            if any(p.is_meta for p in layer.parameters()):
                layer.to_empty(device=device).to(dtype)
            fresh.append(layer)
    model.reset_new_layers(init, fresh)
    return missing


def load_dit(
    config: Union[None, str, DiTConfig, Mapping[str, Any]] = None,
    weights: Optional[Weights] = None,
    *,
    init: str = "official",
    device: Union[str, torch.device] = "cpu",
    dtype: Union[None, str, torch.dtype] = None,
    placement: Optional[Placement] = None,
) -> WanDiT4D:
    """Build the 4D DiT, optionally with weights.

    ``config``: preset name ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "tiny"), a :class:`DiTConfig`, or a
    mapping / OmegaConf DictConfig of fields (optionally ``preset: <name>`` plus overrides); None =
    read from the weights file's ``dit_config`` safetensors metadata (:data:`METADATA_KEY`, written by
    the training export). ``weights``: None (initialise with ``init``: "official" = Wan's init, a
    fresh model outputs 0; "random" = non-zero outputs, for tests; both draw from the global RNG),
    an fsspec URL of official-format or diffusers-format weights, or an in-memory state dict.
    ``device="meta"`` builds without memory (key inspection). ``dtype``: torch dtype or name, None =
    float32. ``placement`` (training engines): overrides ``device`` and ``dtype``; a ZeRO-3 placement
    builds the model partitioned over the ranks (see the module docstring). Returns the model in
    eval mode (training code calls ``.train()``).
    """
    if config is None:
        config = config_from_metadata(weights, METADATA_KEY, "load_dit")
    cfg = resolve_config(config)
    if placement is not None:
        device, dtype = placement.device, placement.dtype
    dtype = resolve_dtype(dtype)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; use one of {', '.join(INITS)}")
    sharded = placement is not None and placement.sharded
    source = None if weights is None else WeightsFile.of(weights, "DiT weights file")
    described = "DiT state dict" if isinstance(weights, Mapping) else f"DiT weights {weights}"
    if sharded and source is not None:  # keys and shapes are checked on a meta model before anything is built
        with torch.device("meta"):
            _checked_keys(WanDiT4D(cfg), source, described)
    if sharded:
        with placement.construction():
            model = WanDiT4D(cfg)
    else:
        with torch.device(device if weights is None else "meta"):
            model = WanDiT4D(cfg)
    if source is None:
        if not any(p.is_meta for p in model.parameters()):
            model.reset_parameters(init)
        return (model if sharded else model.to(dtype)).eval()
    load_weights(model, source, init=init, device=device, dtype=dtype, source=described)
    return model.eval()


def dit_metadata(config: Union[DiTConfig, Mapping[str, Any]]) -> dict[str, str]:
    """Safetensors metadata (``dit_config``) that lets ``load_dit(weights=file)`` rebuild ``config``."""
    return config_metadata(METADATA_KEY, config)
