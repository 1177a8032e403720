"""What an inference run checks before it loads any model (a 14B model takes minutes to load; a bad
value should fail in a second): settings, the files the config names (weights headers, tokenizer),
the model configs (presets or the weights' metadata), whether the grid fits the DiT, the estimated
memory of an input, and whether the grid is the one the DiT weights were trained on (a warning).
Every problem raises :class:`fourd.video_io.InputError` (or a :mod:`fourd.preflight` /
:mod:`fourd.weights` error) in one line naming the key or file and the fix.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from omegaconf import DictConfig

from fourd.preflight import check_config
from fourd.video_io import InputError, check_frame_count
from fourd.weights import config_from_metadata
from video4d.grid import TRAINED_GRID_KEY, collapsed_time_positions

__all__ = ["STAGES", "MODES", "DTYPES", "check_settings", "ModelConfigs", "check_models", "check_mode", "memory_estimate",
           "check_memory", "trained_grid_warning"]

STAGES = ("all", "generate", "reconstruct")
MODES = ("auto", "monocular", "both", "row_only")
DTYPES = ("float32", "bfloat16", "float16")
GIB = 2**30


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise InputError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def _at_least(cfg: DictConfig, key: str, low: int) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if not isinstance(value, int) or value < low:
        raise InputError(f"{key}={value!r} must be an integer >= {low}")


def check_settings(cfg: DictConfig) -> None:
    """Every setting of ``configs/infer.yaml`` that can be checked from the config alone."""
    _one_of("stages", cfg.stages, STAGES)
    _one_of("dtype", cfg.dtype, DTYPES)
    _at_least(cfg, "input.stride", 1)
    if cfg.stages != "reconstruct":
        _one_of("mode", cfg.mode, MODES)
        if cfg.sampler.name != "euler":
            raise InputError(f"sampler.name={cfg.sampler.name!r}: only 'euler' (rectified-flow Euler) is implemented")
        if not isinstance(cfg.views, int) or cfg.views < 2:
            raise InputError(f"views={cfg.views!r}: a 4D grid needs at least 2 views (rows; view 0 is the input video)")
        check_frame_count(cfg.frames)
        for key in ("height", "width"):
            if not isinstance(cfg[key], int) or cfg[key] < 16 or cfg[key] % 16:
                raise InputError(f"{key}={cfg[key]!r} must be a positive multiple of 16 (VAE factor 8 x patch 2)")
        for key in ("sampler.steps", "vae.decode_chunk"):
            _at_least(cfg, key, 1)
    if cfg.stages != "generate":
        r = cfg.reconstructor
        for key in ("height", "width"):
            if not isinstance(r[key], int) or r[key] < 14 or r[key] % 14:
                raise InputError(f"reconstructor.{key}={r[key]!r} must be a positive multiple of 14 (the patch size)")
        for key in ("reconstructor.frame_stride", "reconstructor.path_frames"):
            _at_least(cfg, key, 1)
        _at_least(cfg, "reconstructor.time", 0)
        if cfg.stages == "all" and r.time >= len(range(0, cfg.frames, r.frame_stride)):
            raise InputError(f"reconstructor.time={r.time} but frames={cfg.frames} with frame_stride={r.frame_stride} give "
                             f"{len(range(0, cfg.frames, r.frame_stride))} timesteps: choose a smaller reconstructor.time")


class ModelConfigs:
    """Resolved model configs (no model built) and the weights' metadata: ``dit``, ``vae``,
    ``reconstructor`` (None when the stage does not run), ``dit_metadata``."""

    def __init__(self) -> None:
        self.dit = self.vae = self.reconstructor = self.text_encoder = None
        self.dit_metadata: dict[str, str] = {}


def _unused(cfg: DictConfig) -> list[str]:
    """Config nodes this run does not read (their ``???`` keys and files are not checked)."""
    unused = []
    if cfg.stages == "reconstruct":
        unused += ["dit", "vae", "text_encoder", "context_file", "negative_context_file"]
    if cfg.stages == "generate":
        unused += ["reconstructor"]
    if cfg.context_file is not None:
        unused += ["text_encoder"]
    return unused


def _config(preset: Any, weights: Optional[str], metadata_key: str, key: str, resolve) -> Any:
    """``resolve(preset)``, or of the weights' ``metadata_key`` config when the preset is null."""
    if preset is None and weights is None:
        raise InputError(f"{key}=null and no weights: name a config ({key}=...) or a weights file with {metadata_key!r} metadata")
    try:
        return resolve(preset if preset is not None else config_from_metadata(weights, metadata_key, key))
    except ValueError as e:
        raise InputError(f"{key}: {str(e).splitlines()[0]}") from None


def check_models(cfg: DictConfig) -> ModelConfigs:
    """Unset keys and files of the models this run uses (headers parse), their configs resolved, the
    grid checked against the DiT's positions, and the tokenizer: all before any model is built."""
    from fourd.weights import read_metadata

    check_config(cfg, skip=_unused(cfg) + ["hydra"])
    out = ModelConfigs()
    if cfg.stages != "reconstruct":
        from video4d.model.config import resolve_config as dit_config
        from video4d.text_encoder import resolve_config as text_config
        from video4d.vae.config import resolve_config as vae_config

        d = cfg.dit
        preset = None if d.preset is None else {"preset": d.preset, "attention_backend": d.attention_backend}
        out.dit = _config(preset, d.weights, "dit_config", "dit.preset", dit_config)
        out.dit_metadata = read_metadata(d.weights, "dit.weights") if d.weights else {}
        out.vae = _config(cfg.vae.config, cfg.vae.weights, "vae_config", "vae.config", vae_config)
        if (out.dit.in_dim, out.dit.out_dim) != (out.vae.z_dim, out.vae.z_dim):
            dit = f"dit.weights={d.weights}" if d.weights else f"dit.preset={d.preset}"
            vae = f"vae.weights={cfg.vae.weights}" if cfg.vae.weights else "vae.config"
            raise InputError(f"{dit} takes {out.dit.in_dim}-channel latents but the VAE ({vae}) has "
                             f"z_dim {out.vae.z_dim}: give the VAE the DiT was trained on")
        latent_frames = (cfg.frames - 1) // out.vae.temporal_factor + 1
        try:
            collapsed_time_positions(cfg.views, latent_frames, out.dit.rope_t_max, out.dit.rope_position_mode)
        except ValueError as e:
            raise InputError(f"views={cfg.views} x frames={cfg.frames} ({latent_frames} latent frames) do not fit the DiT: {e}") from None
        if cfg.context_file is None:
            te = cfg.text_encoder
            out.text_encoder = _config(te.config, te.weights, "text_encoder_config", "text_encoder.config", text_config)
            if te.tokenizer is None and not out.text_encoder.bundled_tokenizer:
                raise InputError("text_encoder.tokenizer=null: this text encoder has no bundled tokenizer; set text_encoder.tokenizer="
                                 "<folder with tokenizer.json> (or give context_file=<precomputed embeddings>)")
    if cfg.stages != "generate":
        from recon.model.config import resolve_config as recon_config

        r = cfg.reconstructor
        out.reconstructor = _config(r.config, r.weights, "recon_config", "reconstructor.config", recon_config)
    return out


def check_mode(cfg: DictConfig, has_freeze: bool, source: str) -> str:
    """The generation mode of an item (``auto``: both with freeze-time images, else monocular);
    a mode that does not fit the item's inputs raises, naming ``source``."""
    if cfg.mode == "auto":
        return "both" if has_freeze else "monocular"
    if cfg.mode == "both" and not has_freeze:
        raise InputError(f"mode=both needs freeze-time images for {source}: set input.freeze_time=<folder of {cfg.views} images> (or mode=auto)")
    if cfg.mode != "both" and has_freeze:
        raise InputError(f"mode={cfg.mode} does not take freeze-time images ({source} has some): drop them, or use mode=both / auto")
    return cfg.mode


def memory_estimate(cfg: DictConfig, native_hw: tuple[int, int], vae_dim: int) -> dict[str, float]:
    """Estimated bytes of the largest tensors of one item (float32): the input video resized to cover
    the grid size, the decoded grid (kept twice: decoded, then on the CPU), and the VAE decoder's
    full-resolution activations (about 4 live tensors of ``vae_dim`` channels per decoded frame)."""
    V, F, H, W = cfg.views, cfg.frames, cfg.height, cfg.width
    h0, w0 = native_hw
    scale = max(H / h0, W / w0)
    cover = round(h0 * scale) * round(w0 * scale)
    videos = cfg.vae.max_videos or V
    return {
        "resized input": F * 3 * (h0 * w0 + cover) * 4.0,
        "decoded grid": 2 * V * F * 3 * H * W * 4.0,
        "VAE decoder activations": 4 * videos * min(F, 4 * cfg.vae.decode_chunk) * vae_dim * H * W * 4.0,
    }


def check_memory(cfg: DictConfig, native_hw: tuple[int, int], vae_dim: int, source: str) -> None:
    """Raise when :func:`memory_estimate` exceeds ``limits.max_memory_gb``, with the estimate in the message."""
    parts = memory_estimate(cfg, native_hw, vae_dim)
    total = sum(parts.values()) / GIB
    if total > cfg.limits.max_memory_gb:
        shown = ", ".join(f"{k} {v / GIB:.1f}" for k, v in parts.items())
        raise InputError(f"{cfg.views} views x {cfg.frames} frames at height x width = {cfg.height}x{cfg.width} from {source} "
                         f"({native_hw[0]}x{native_hw[1]}) need an estimated {total:.1f} GiB ({shown}), over limits.max_memory_gb="
                         f"{cfg.limits.max_memory_gb}: lower height/width/views/frames (or vae.max_videos=1), or raise the limit")


def trained_grid_warning(cfg: DictConfig, metadata: dict[str, str]) -> Optional[str]:
    """One line when the grid of this run differs from the ``trained_grid`` metadata of the DiT
    weights (views, frames, height, width); None when it matches or the weights do not say."""
    if TRAINED_GRID_KEY not in metadata:
        return None
    trained = json.loads(metadata[TRAINED_GRID_KEY])
    asked = {"views": cfg.views, "frames": cfg.frames, "height": cfg.height, "width": cfg.width}
    if all(trained.get(k) == v for k, v in asked.items()):
        return None
    grid = "{views} views x {frames} frames at {height}x{width}"
    return (f"the DiT weights {cfg.dit.weights} were trained on {grid.format(**trained)}; this run asks for {grid.format(**asked)}: "
            "outside the trained grid expect degraded or noisy results (views=, frames=, height=, width= set the grid)")
