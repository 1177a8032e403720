"""Building reconstructors and loading VGGT-1B or our own weights into them.

Loading is strict except for two documented relaxations:

- keys of **new layers** (temporal blocks, Gaussian head) may be missing from the file: they keep
  their (zero-)initialisation, e.g. when a 4D model starts from the official VGGT-1B checkpoint;
  so may the keys of the heads named in ``init_heads`` (e.g. the depth and point heads when a base
  pretrained on cameras alone continues with every loss);
- keys of **heads the config disables** (e.g. ``track_head.*`` and ``point_head.*`` for the 4D
  presets), and of the temporal blocks when the config has ``temporal=False`` (the paper's ablation
  started from a 4D export), are dropped and reported by name.

Any other missing or unexpected key, or a shape mismatch, raises
:class:`fourd.weights.StateDictMismatchError` naming the keys.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from fourd.sharded import Placement, fill
from fourd.weights import WeightsFile, check_state_dict, config_from_metadata, config_metadata, resolve_dtype

from .config import ReconstructorConfig, resolve_config
from .reconstructor import Reconstructor

__all__ = ["LoadReport", "build_reconstructor", "is_new_layer_key", "load_reconstructor", "load_weights", "recon_metadata", "METADATA_KEY"]

METADATA_KEY = "recon_config"  # safetensors metadata entry holding the config JSON

logger = logging.getLogger(__name__)

def _names(keys: list[str], limit: int = 20) -> str:
    return ", ".join(sorted(keys)[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


HEADS = ("camera_head", "point_head", "depth_head", "track_head", "gaussian_head")


@dataclass
class LoadReport:
    """What a load did: ``missing`` new-layer keys left at init, ``dropped`` keys of disabled heads (and of
    the temporal blocks when the model has no temporal attention, e.g. the ablation from a 4D export)."""

    missing: list[str]
    dropped: list[str]


TEMPORAL_PREFIXES = ("aggregator.frame_temporal_blocks.", "aggregator.global_temporal_blocks.")


def is_new_layer_key(key: str) -> bool:
    """True for keys of layers that VGGT-1B lacks: temporal blocks and the Gaussian head."""
    return key.startswith((*TEMPORAL_PREFIXES, "gaussian_head."))


def build_reconstructor(config: Union[str, ReconstructorConfig, Mapping[str, Any]] = "vggt-1b-4d") -> Reconstructor:
    """A freshly initialised :class:`Reconstructor` for a preset name, config or mapping."""
    return Reconstructor(resolve_config(config))


def _plan(model: Reconstructor, source: WeightsFile, described: str, init_heads: Sequence[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """``(kept, dropped, missing)`` keys of ``source`` for ``model`` after the strict key / shape check
    (see the module docstring)."""
    unknown = sorted(set(init_heads) - set(HEADS))
    if unknown:
        raise ValueError(f"init_heads names {unknown}, which are not heads; use some of {', '.join(HEADS)}")
    disabled = {h for h in HEADS if getattr(model, h) is None}
    temporal = () if model.cfg.temporal else TEMPORAL_PREFIXES  # a model without temporal attention drops those keys

    def unused(key: str) -> bool:
        return key.split(".", 1)[0] in disabled or key.startswith(temporal)

    meta = source.meta()
    kept = [k for k in meta if not unused(k)]
    missing, _ = check_state_dict(model, {k: meta[k] for k in kept}, source=described,
                                  allow_missing=lambda k: is_new_layer_key(k) or k.split(".", 1)[0] in init_heads)
    return kept, [k for k in meta if unused(k)], missing


def load_weights(model: Reconstructor, weights: Union[str, Mapping[str, torch.Tensor], WeightsFile], source: Optional[str] = None,
                 init_heads: Sequence[str] = ()) -> LoadReport:
    """Load weights (an fsspec URL of safetensors/.pt/.pth, a mapping, or an opened
    :class:`WeightsFile`) into ``model``, one tensor at a time; ZeRO-3 partitioned parameters get
    this rank's slices only (:func:`fourd.sharded.fill`). ``init_heads``: heads (:data:`HEADS`) whose
    keys may be missing from the file (they keep their init).

    Returns a :class:`LoadReport`; raises ``WeightsNotFoundError`` naming a missing file and
    ``StateDictMismatchError`` naming mismatched keys (see module docstring).
    """
    source = source or (weights if isinstance(weights, str) else "state dict")
    file = WeightsFile.of(weights, "reconstructor weights")
    kept, dropped, missing = _plan(model, file, source, init_heads)
    fill(model, file, {k: k for k in kept})
    if dropped:
        logger.info("%s: dropped %d keys of disabled heads / absent temporal blocks: %s", source, len(dropped), _names(dropped))
    if missing:
        logger.info("%s: %d keys of new layers / init_heads not in the file, kept at init: %s", source, len(missing), _names(missing))
    return LoadReport(missing=missing, dropped=dropped)


def load_reconstructor(
    config: Union[None, str, ReconstructorConfig, Mapping[str, Any]] = None,
    weights: Optional[Union[str, Mapping[str, torch.Tensor]]] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    dtype: Union[None, str, torch.dtype] = None,
    placement: Optional[Placement] = None,
    init_heads: Sequence[str] = (),
) -> Reconstructor:
    """Build a reconstructor and optionally load weights.

    Args:
        config: preset name (``"vggt-1b"``, ``"vggt-1b-4d"``, ``"tiny"``, ``"tiny-4d"``), a
            :class:`ReconstructorConfig`, or a mapping ``{"preset": name, **overrides}``; None =
            read from the weights file's ``recon_config`` safetensors metadata (written by the
            training exports; :func:`recon_metadata`).
        weights: fsspec path of the VGGT-1B checkpoint (safetensors or ``.pt``/``.pth``, read with
            ``weights_only``) or of a saved reconstructor, or a state dict; None keeps the random
            initialisation (drawn from the global RNG: seed it, as the training tasks do).
        device: where the parameters live; ``"meta"`` builds without memory (key inspection: the
            weights' keys and shapes are checked, nothing is loaded).
        dtype: parameter dtype (torch dtype or name); None = float32.
        placement: (training engines) overrides ``device`` and ``dtype``; a ZeRO-3 placement builds
            the model partitioned over the ranks under ``deepspeed.zero.Init`` (keys checked on a
            meta model first) and each rank reads only its slices of the weights.
        init_heads: heads whose keys may be missing from ``weights`` (kept at their init), e.g.
            ``("depth_head", "point_head")`` after camera-only pretraining.
    Returns:
        the model in eval mode (training code calls ``.train()``); the load report is logged and
        kept as ``model.load_report`` (None without weights or on meta).
    """
    if config is None:
        config = config_from_metadata(weights, METADATA_KEY, "load_reconstructor")
    if placement is not None:
        device, dtype = placement.device, placement.dtype
    dtype = resolve_dtype(dtype)
    file = None if weights is None else WeightsFile.of(weights, "reconstructor weights")
    described = weights if isinstance(weights, str) else "state dict"
    sharded = placement is not None and placement.sharded
    if torch.device(device).type == "meta" or (sharded and file is not None):
        with torch.device("meta"):
            model = build_reconstructor(config).to(dtype)
        if file is not None:
            _plan(model, file, described, init_heads)
        if not sharded:
            model.load_report = None
            return model.eval()
    if sharded:
        with placement.construction():
            model = build_reconstructor(config)
    else:
        model = build_reconstructor(config)  # on the CPU: the seeded init does not depend on the device
    model.load_report = load_weights(model, file, described, init_heads) if file is not None else None
    return (model if sharded else model.to(device=device, dtype=dtype)).eval()


def recon_metadata(config: Union[ReconstructorConfig, Mapping[str, Any]]) -> dict[str, str]:
    """Safetensors metadata (``recon_config``) that lets ``load_reconstructor(weights=file)`` rebuild ``config``."""
    return config_metadata(METADATA_KEY, config)
