"""Copy a training run's exported weights to a chosen path, never replacing a file unless asked.

Every training entry point (launch/train_video4d.py, train_recon.py, train_recon_base.py, train_vae.py)
takes ``publish_to=<url>`` (null: off) and ``publish_overwrite=false``. Before training,
:func:`check_publish_target` fails in a second when the target exists (the shipped ``checkpoints/``
files included) and overwriting was not asked for; after training, rank 0 copies
``<run dir>/export/model.safetensors`` there atomically (:func:`publish_export`).
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import fsspec
from omegaconf import DictConfig, OmegaConf

from fourd.weights import atomic_write_bytes

__all__ = ["check_publish_target", "publish_export"]

log = logging.getLogger(__name__)


def check_publish_target(cfg: DictConfig) -> Optional[str]:
    """``cfg.publish_to`` (or None when unset), after checking that publishing there is allowed: a
    full export is configured and no file is there unless ``publish_overwrite`` is true."""
    url = OmegaConf.select(cfg, "publish_to", default=None)
    if not url:
        return None
    if OmegaConf.select(cfg, "train.export", default="full") not in ("full", "both"):
        raise ValueError(f"publish_to={url} needs the full weights: set train.export=full or both")
    fs, path = fsspec.core.url_to_fs(url)
    if fs.isdir(path):
        raise IsADirectoryError(f"publish_to={url} is a directory; give the file to write (e.g. {url.rstrip('/')}/model.safetensors)")
    if fs.exists(path) and not OmegaConf.select(cfg, "publish_overwrite", default=False):
        raise FileExistsError(f"publish_to={url} exists; add publish_overwrite=true to replace it (or publish elsewhere)")
    return url


def publish_export(cfg: DictConfig, exports: Sequence[str]) -> Optional[str]:
    """Copy the full export (``.../model.safetensors`` among ``exports``) to ``cfg.publish_to``; returns it (None when unset)."""
    url = check_publish_target(cfg)  # again: the target may have appeared during training
    if url is None:
        return None
    full = [p for p in exports if os.path.basename(p) == "model.safetensors"]
    if not full:
        raise ValueError(f"publish_to={url}: the run exported no model.safetensors (exports: {list(exports)})")
    with open(full[0], "rb") as f:
        atomic_write_bytes(url, f)  # streamed: a 14B export is not read into memory
    log.info("published %s to %s", full[0], url)
    return url
