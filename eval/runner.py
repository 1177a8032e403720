"""Run one benchmark and write its results: ``results.json``, ``results.md`` and ``plots/*.png``.

:func:`run` is what ``launch/eval.py`` calls. In a Hydra ``-m`` sweep every job also rewrites
``<sweep dir>/combined.md`` + ``combined.json`` from all ``results.json`` of the sweep so far, so
after the last job it is the table of all runs (rows labelled by their overrides).
"""
from __future__ import annotations

import glob
import json
import logging
import os
import time
from typing import Any, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from eval.plots import write_plots
from eval.tables import combined_markdown, results_markdown
from fourd.weights import atomic_write_bytes

__all__ = ["run", "write_combined", "benchmark_names"]

log = logging.getLogger(__name__)


def _benchmarks() -> dict:
    from eval.ablations import ABLATIONS
    from eval.protocols.suites import BENCHMARKS

    return {**BENCHMARKS, **ABLATIONS}


def benchmark_names() -> list[str]:
    """Names accepted as ``benchmark.name``."""
    return sorted(_benchmarks())


def _settings_line(cfg: DictConfig) -> str:
    def model(node: DictConfig, key: str) -> str:
        name = node[key] if node[key] is not None else "config from the weights' metadata"
        return f"{name} ({'weights ' + os.path.basename(str(node.weights)) if node.weights else 'untrained: random init'})"

    if cfg.benchmark.name.startswith("ablation"):
        return (f"each row trained from the tiny training configs + benchmark.train_overrides {list(cfg.benchmark.train_overrides)}; "
                f"sampler {cfg.sampler.steps} steps; device {cfg.device}")
    return (f"DiT {model(cfg.dit, 'preset')}, VAE {model(cfg.vae, 'config')}, reconstructor {model(cfg.recon, 'preset')}; "
            f"sampler {cfg.sampler.steps} steps, shift {cfg.sampler.shift}; text {_text(cfg)}; device {cfg.device}")


def _text(cfg: DictConfig) -> str:
    encoder = cfg.get("text", {}).get("encoder")
    if encoder:
        return f"captions through text encoder {encoder.get('config')} ({'weights ' + os.path.basename(str(encoder.weights)) if encoder.get('weights') else 'seeded init'})"
    return f"one context for every scene ({cfg.dit.context_file or 'zeros'})"


def _check(cfg: DictConfig) -> None:
    """What needs no model, before any is built: unset keys, the files the config names (weights headers
    parse), the dataset root, and the model configs (presets exist, or the weights carry theirs)."""
    import fsspec

    from eval.protocols.datasets import DatasetNotFoundError
    from eval.protocols.models import model_config
    from fourd.preflight import ConfigError, check_config
    from fourd.weights import config_from_metadata
    from recon.model.config import resolve_config as recon_config
    from video4d.model.config import resolve_config as dit_config
    from video4d.vae.config import resolve_config as vae_config

    check_config(cfg)
    root = cfg.benchmark.get("root")
    if isinstance(root, str):
        fs, path = fsspec.core.url_to_fs(root)
        if not fs.exists(path):
            raise DatasetNotFoundError(f"dataset root not found: {root} (set the {cfg.benchmark.name} dataset's folder: benchmark.root=<path>)")
    if cfg.benchmark.name.startswith("ablation"):
        return  # each row trains its own models from the training configs
    models = (("dit", "preset", "dit_config", "load_dit", dit_config), ("recon", "preset", "recon_config", "load_reconstructor", recon_config),
              ("vae", "config", "vae_config", "load_vae", vae_config))
    for node, key, metadata_key, loader, resolve in models:
        c = cfg[node]
        try:
            config = model_config(c[key], c.get("overrides", {}), c.weights, metadata_key, loader)
            resolve(config if config is not None else config_from_metadata(c.weights, metadata_key, loader))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{node}.{key}={c[key]}: {str(e).splitlines()[0]}") from None


def run(cfg: DictConfig, out_dir: str, overrides: Sequence[str] = (), sweep_dir: Optional[str] = None) -> dict[str, Any]:
    """Run benchmark ``cfg.benchmark.name`` with the models of ``cfg`` and write its outputs into
    ``out_dir`` (and the combined table into ``sweep_dir`` when given). ``overrides``: the command-line
    overrides of this run (they label it). Returns the results document."""
    from eval.protocols.suites import Models

    benchmarks = _benchmarks()
    name = cfg.benchmark.name
    if name not in benchmarks:
        raise ValueError(f"unknown benchmark {name!r}; use one of {', '.join(sorted(benchmarks))} (configs/benchmark/)")
    _check(cfg)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    boards = benchmarks[name](cfg, Models(cfg), out_dir)
    doc = {
        "benchmark": name,
        "label": ",".join(overrides) or "default",
        "overrides": list(overrides),
        "settings_line": _settings_line(cfg),
        "seconds": round(time.perf_counter() - start, 2),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "tables": {t: {"rows": b.rows(), "notes": dict(b.notes), "cell_psnr": b.cell_maps()} for t, b in boards.items()},
    }
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_bytes(os.path.join(out_dir, "results.json"), json.dumps(doc, indent=1).encode())
    atomic_write_bytes(os.path.join(out_dir, "results.md"), results_markdown(doc).encode())
    doc["plots"] = write_plots(doc["tables"], os.path.join(out_dir, "plots")) if cfg.output.plots else []
    log.info("%s: wrote %s (%d plots) in %.1f s", name, os.path.join(out_dir, "results.md"), len(doc["plots"]), doc["seconds"])
    if sweep_dir is not None:
        write_combined(sweep_dir)
    return doc


def write_combined(sweep_dir: str) -> str:
    """``combined.md`` + ``combined.json`` of every ``*/results.json`` under ``sweep_dir`` (sorted by job
    dir); returns the markdown path."""
    paths = sorted(glob.glob(os.path.join(sweep_dir, "*", "results.json")))
    docs = [json.load(open(p)) for p in paths]
    for doc in docs:
        doc.pop("config", None)
    md = os.path.join(sweep_dir, "combined.md")
    atomic_write_bytes(md, combined_markdown(docs).encode())
    atomic_write_bytes(os.path.join(sweep_dir, "combined.json"), json.dumps(docs, indent=1).encode())
    return md
