"""One way to turn a user's model config into a frozen config dataclass (shared by every loader).

A config is a preset name, an instance of the dataclass, or a mapping (plain dict or a Hydra
``DictConfig``) of ``preset: <name>`` plus field overrides; a mapping without ``preset`` starts
from ``default`` (or, when that is None, must give every field without a default). Unknown
presets and fields raise a ``ValueError`` that names them and lists the known ones.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, TypeVar

__all__ = ["plain_mapping", "resolve_preset_config"]

C = TypeVar("C")


def plain_mapping(config: Mapping) -> dict:
    """``config`` as a plain ``dict`` (a Hydra ``DictConfig`` resolved to containers)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


def resolve_preset_config(config: Any, cls: type[C], presets: Mapping[str, C], what: str, default: Optional[str] = None,
                          coerce: Optional[Callable[[str, Any], Any]] = None) -> C:
    """The ``cls`` instance described by ``config`` (see the module docstring).

    ``what`` names the model in errors (e.g. ``"DiT"``); ``coerce(field, value)`` converts mapping
    values (e.g. lists to tuples, nested mappings to dataclasses) before they reach ``cls``.
    """
    if isinstance(config, cls):
        return config
    if isinstance(config, str):
        config = {"preset": config}
    if not isinstance(config, Mapping):
        raise TypeError(f"{what} config must be a preset name, a {cls.__name__} or a mapping, got {type(config).__name__}")
    values = {str(k): v for k, v in plain_mapping(config).items()}
    preset = values.pop("preset", default)
    if preset is not None and preset not in presets:
        raise ValueError(f"unknown {what} preset {preset!r}; choose one of {', '.join(presets)}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} config fields: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if coerce is not None:
        values = {k: coerce(k, v) for k, v in values.items()}
    return dataclasses.replace(presets[preset], **values) if preset is not None else cls(**values)
