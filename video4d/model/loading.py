"""Building the 4D DiT and loading official Wan2.1 (or diffusers-format) weights into it.

Weights are read through fsspec (:func:`fourd.weights.read_state_dict`: a single safetensors file,
a sharded checkpoint by its ``*.safetensors.index.json`` or directory, or a ``.pt`` file). The model
is built on the meta device and the checkpoint tensors are assigned to it, so loading needs no
second copy of the weights (the 14B model can also be built on meta alone, to inspect keys).
Loading is strict: missing, unexpected or mis-shaped keys raise
:class:`fourd.weights.StateDictMismatchError` naming them; the only keys allowed to be missing are
the new layers of the sequential/parallel variants, which are then initialised (see
:meth:`WanDiT4D.reset_new_layers`).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import torch

from fourd.weights import StateDictMismatchError, check_state_dict, config_from_metadata, config_metadata, read_state_dict, resolve_dtype
from video4d.model.config import INITS, DiTConfig, resolve_config
from video4d.model.keymap import to_official
from video4d.model.variants import is_new_layer_key
from video4d.model.wan import WanDiT4D

__all__ = ["load_dit", "load_weights", "dit_metadata", "METADATA_KEY"]

METADATA_KEY = "dit_config"  # safetensors metadata entry holding the config JSON


def load_weights(
    model: WanDiT4D,
    state: Mapping[str, torch.Tensor],
    *,
    init: str = "official",
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    source: str = "state dict",
) -> list[str]:
    """Assign ``state`` (official, diffusers or prefixed keys) to ``model``'s parameters, cast to
    ``dtype`` on ``device``. ``model`` may live on the meta device. New variant layers absent from
    ``state`` are created on ``device`` and initialised with ``init``. Returns those missing keys.
    """
    state = to_official(state)
    cfg = model.config
    described = f"{source} (DiT {cfg.attention_variant} variant, dim {cfg.dim}, {cfg.num_layers} layers)"
    missing, _ = check_state_dict(model, state, allow_missing=is_new_layer_key, source=described)
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, strict=False, assign=True)
    fresh = []
    for layer in model.new_layers():
        on_meta = [p.is_meta for p in layer.parameters()]
        if any(on_meta) and not all(on_meta):
            raise StateDictMismatchError(f"{source} holds only some parameters of a new {type(layer).__name__} layer")
        if all(on_meta) and str(torch.device(device)) != "meta":
            layer.to_empty(device=device)
            fresh.append(layer.to(dtype))
    model.reset_new_layers(init, fresh)
    return missing


def load_dit(
    config: Union[None, str, DiTConfig, Mapping[str, Any]] = None,
    weights: Optional[Union[str, Mapping[str, torch.Tensor]]] = None,
    *,
    init: str = "official",
    device: Union[str, torch.device] = "cpu",
    dtype: Union[None, str, torch.dtype] = None,
) -> WanDiT4D:
    """Build the 4D DiT, optionally with weights.

    ``config``: preset name ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "tiny"), a :class:`DiTConfig`, or a
    mapping / OmegaConf DictConfig of fields (optionally ``preset: <name>`` plus overrides); None =
    read from the weights file's ``dit_config`` safetensors metadata (:data:`METADATA_KEY`, written by
    the training export). ``weights``: None (initialise with ``init``: "official" = Wan's init, a
    fresh model outputs 0; "random" = non-zero outputs, for tests; both draw from the global RNG),
    an fsspec URL of official-format or diffusers-format weights, or an in-memory state dict.
    ``device="meta"`` builds without memory (key inspection). ``dtype``: torch dtype or name, None =
    float32. Returns the model in eval mode (training code calls ``.train()``).
    """
    if config is None:
        config = config_from_metadata(weights, METADATA_KEY, "load_dit")
    cfg = resolve_config(config)
    dtype = resolve_dtype(dtype)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; use one of {', '.join(INITS)}")
    if weights is None:
        with torch.device(device):
            model = WanDiT4D(cfg)
        if not any(p.is_meta for p in model.parameters()):
            model.reset_parameters(init)
        return model.to(dtype).eval()
    source = "DiT state dict" if isinstance(weights, Mapping) else f"DiT weights {weights}"
    with torch.device("meta"):
        model = WanDiT4D(cfg)
    state = weights if isinstance(weights, Mapping) else read_state_dict(weights, what="DiT weights file")
    load_weights(model, state, init=init, device=device, dtype=dtype, source=source)
    return model.eval()


def dit_metadata(config: Union[DiTConfig, Mapping[str, Any]]) -> dict[str, str]:
    """Safetensors metadata (``dit_config``) that lets ``load_dit(weights=file)`` rebuild ``config``."""
    return config_metadata(METADATA_KEY, config)
