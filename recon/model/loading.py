"""Building reconstructors and loading VGGT-1B or our own weights into them.

Loading is strict except for two documented relaxations:

- keys of **new layers** (temporal blocks, Gaussian head) may be missing from the file: they keep
  their (zero-)initialisation, e.g. when a 4D model starts from the official VGGT-1B checkpoint;
- keys of **heads the config disables** (e.g. ``track_head.*`` and ``point_head.*`` for the 4D
  presets) are dropped and reported by name.

Any other missing or unexpected key, or a shape mismatch, raises
:class:`fourd.weights.StateDictMismatchError` naming the keys.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import torch

from fourd.weights import load_into, read_state_dict

from .config import ReconstructorConfig, resolve_config
from .reconstructor import Reconstructor

__all__ = ["LoadReport", "build_reconstructor", "is_new_layer_key", "load_reconstructor", "load_weights"]

logger = logging.getLogger(__name__)

def _names(keys: list[str], limit: int = 20) -> str:
    return ", ".join(sorted(keys)[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


HEADS = ("camera_head", "point_head", "depth_head", "track_head", "gaussian_head")


@dataclass
class LoadReport:
    """What a load did: ``missing`` new-layer keys left at init, ``dropped`` keys of disabled heads."""

    missing: list[str]
    dropped: list[str]


def is_new_layer_key(key: str) -> bool:
    """True for keys of layers that VGGT-1B lacks: temporal blocks and the Gaussian head."""
    return key.startswith(("aggregator.frame_temporal_blocks.", "aggregator.global_temporal_blocks.", "gaussian_head."))


def build_reconstructor(config: Union[str, ReconstructorConfig, Mapping[str, Any]] = "vggt-1b-4d") -> Reconstructor:
    """A freshly initialised :class:`Reconstructor` for a preset name, config or mapping."""
    return Reconstructor(resolve_config(config))


def load_weights(model: Reconstructor, weights: Union[str, Mapping[str, torch.Tensor]], source: Optional[str] = None) -> LoadReport:
    """Load a state dict (an fsspec URL of safetensors/.pt/.pth, or a mapping) into ``model``.

    Returns a :class:`LoadReport`; raises ``WeightsNotFoundError`` naming a missing file and
    ``StateDictMismatchError`` naming mismatched keys (see module docstring).
    """
    if isinstance(weights, str):
        source = source or weights
        state = read_state_dict(weights, what="reconstructor weights")
    else:
        source = source or "state dict"
        state = dict(weights)
    disabled = {h for h in HEADS if getattr(model, h) is None}
    dropped = [k for k in state if k.split(".", 1)[0] in disabled]
    kept = {k: v for k, v in state.items() if k.split(".", 1)[0] not in disabled}
    missing, _ = load_into(model, kept, strict=True, allow_missing=is_new_layer_key, source=source)
    if dropped:
        logger.info("%s: dropped %d keys of disabled heads: %s", source, len(dropped), _names(dropped))
    if missing:
        logger.info("%s: %d new-layer keys not in the file, kept at init: %s", source, len(missing), _names(missing))
    return LoadReport(missing=missing, dropped=dropped)


def load_reconstructor(config: Union[str, ReconstructorConfig, Mapping[str, Any]] = "vggt-1b-4d", weights: Optional[str] = None) -> Reconstructor:
    """Build a reconstructor and optionally load weights.

    Args:
        config: preset name (``"vggt-1b"``, ``"vggt-1b-4d"``, ``"tiny"``, ``"tiny-4d"``), a
            :class:`ReconstructorConfig`, or a mapping ``{"preset": name, **overrides}``.
        weights: fsspec path of the VGGT-1B checkpoint (safetensors or ``.pt``/``.pth``, read with
            ``weights_only``) or of a saved reconstructor; None keeps the random initialisation.
    Returns:
        the model (training mode, CPU, fp32); the load report is logged and kept as
        ``model.load_report`` (None without weights).
    """
    model = build_reconstructor(config)
    model.load_report = load_weights(model, weights) if weights is not None else None
    return model
