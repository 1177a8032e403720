"""Sample a synchronized multi-view ("4D") latent grid with the DiT and save it as an image.

Usage: ``python launch/sample_video4d.py [key=value ...]`` (config: ``configs/sample_video4d.yaml``).
With no arguments a tiny randomly initialised DiT samples a 3 x 4 grid on the CPU in seconds.

Writes into the run directory:

* ``grid.png``: rows = views, columns = times. Without a VAE the latents are previewed directly:
  latent channels 0, 1, 2 -> R, G, B, each normalised to [0, 1] by its 1st/99th percentile over the
  whole grid, upsampled ``display.scale`` times (nearest). With ``vae.weights`` each view's latent
  video is decoded by the Wan2.1 VAE and every ``vae.frame_stride``-th frame is shown.
* ``latents.safetensors``: ``"latents"`` float32 ``[V, T, C, h, w]`` (usable as ``references.file``
  of a later run) and, when references were given, ``"reference_cells"`` uint8 ``[V, T]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import hydra
import imageio.v3 as iio
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fourd.weights import read_state_dict, write_safetensors
from video4d.grid import ReferenceCells, ReferenceLatents
from video4d.model.config import DiTConfig, resolve_config
from video4d.pipeline import frames_to_image
from video4d.sampler import sample
from video4d.text_context import empty_context, load_context

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_model(cfg: DictConfig, device: torch.device) -> tuple[torch.nn.Module, DiTConfig]:
    """The DiT of ``cfg.model`` in eval mode on ``device``: weights loaded, or a seeded init when none are given."""
    from video4d import load_dit

    if cfg.model.dtype not in DTYPES:
        raise ValueError(f"model.dtype={cfg.model.dtype!r} is not one of {', '.join(DTYPES)}")
    config = resolve_config({"preset": cfg.model.preset, **cfg.model.overrides})
    torch.manual_seed(cfg.model.init_seed)
    init = cfg.model.init if cfg.model.weights is None else "official"
    model = load_dit(config, weights=cfg.model.weights, init=init, device=device, dtype=DTYPES[cfg.model.dtype])
    return model.eval(), config


def build_context(url: Optional[str], config: DiTConfig, device: torch.device) -> torch.Tensor:
    """Text context ``[1, L, text_dim]``: the file's embeddings, or ``text_len`` zero tokens when ``url`` is None.

    (The DiT zero-pads shorter contexts to ``text_len`` itself.)
    """
    if url is None:
        return empty_context(1, config.text_len, config.text_dim, device=device)
    return load_context(url, text_dim=config.text_dim).float()[None].to(device)


def build_reference(cfg: DictConfig, shape: tuple[int, ...], device: torch.device) -> Optional[ReferenceLatents]:
    """Reference latents ``[1, V, T, C, h, w]`` from ``cfg.references`` (None when no file is given)."""
    refs = cfg.references
    if refs.file is None:
        return None
    cells = ReferenceCells(view=refs.view, time=refs.time)
    if cells.count == 0:
        raise ValueError(f"references.file={refs.file} is given but references.view and references.time are both null")
    state = read_state_dict(refs.file, what="reference latents file")
    if "latents" not in state:
        raise KeyError(f"reference latents file {refs.file} has no key 'latents'")
    latents = state["latents"].float()
    latents = latents[None] if latents.dim() == 5 else latents
    if tuple(latents.shape) != shape:
        raise ValueError(f"reference latents in {refs.file} have shape {list(latents.shape)}, the grid is {list(shape)}")
    return ReferenceLatents(latents=latents.to(device), cells=cells.mask(shape[1], shape[2], device=device))


def latents_to_frames(latents: torch.Tensor, scale: int) -> torch.Tensor:
    """Preview latents ``[V, T, C, h, w]`` (C >= 3) as frames ``[V, T, 3, h*scale, w*scale]`` in [0, 1]."""
    rgb = latents[:, :, :3].float()
    flat = rgb.transpose(0, 2).reshape(3, -1)
    low, high = torch.quantile(flat, 0.01, dim=1), torch.quantile(flat, 0.99, dim=1)
    rgb = (rgb - low[:, None, None]) / (high - low).clamp(min=1e-6)[:, None, None]
    rgb = rgb.clamp(0, 1).repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return rgb


def decode_frames(vae: torch.nn.Module, latents: torch.Tensor, frame_stride: int) -> torch.Tensor:
    """Decode ``[V, T, C, h, w]`` with the VAE -> every ``frame_stride``-th frame ``[V, T', 3, 8h, 8w]`` in [0, 1]."""
    with torch.no_grad():
        frames = vae.decode(latents[None].to(next(vae.parameters()).device))[0]
    return frames[:, ::frame_stride].cpu()


def generate(cfg: DictConfig, out_dir: str | Path) -> dict[str, Path]:
    """Sample one grid as configured and write ``grid.png`` and ``latents.safetensors`` into ``out_dir``.

    Returns ``{"image": path, "latents": path}``.
    """
    device = torch.device(cfg.device)
    vae = None
    if cfg.vae.weights is not None:  # loaded first: a missing file fails before sampling
        from video4d import load_vae

        vae = load_vae(cfg.vae.config, weights=cfg.vae.weights, device=device)
    model, config = build_model(cfg, device)
    shape = (1, cfg.grid.views, cfg.grid.times, config.in_dim, cfg.grid.height, cfg.grid.width)
    context = build_context(cfg.context.file, config, device)
    if cfg.sampler.guidance != 1.0 and cfg.context.negative_file is None:
        raise ValueError("sampler.guidance != 1 needs context.negative_file (an encoded negative prompt; CFG never uses zeros)")
    negative = None if cfg.context.negative_file is None else build_context(cfg.context.negative_file, config, device)
    reference = build_reference(cfg, shape, device)

    latents = sample(
        model,
        shape,
        context,
        reference=reference,
        steps=cfg.sampler.steps,
        shift=cfg.sampler.shift,
        guidance=cfg.sampler.guidance,
        negative_context=negative,
        seed=cfg.sampler.seed,
        progress=cfg.sampler.progress,
    )[0].cpu()

    frames = latents_to_frames(latents, cfg.display.scale) if vae is None else decode_frames(vae, latents, cfg.vae.frame_stride)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"image": out / "grid.png", "latents": out / "latents.safetensors"}
    iio.imwrite(paths["image"], frames_to_image(frames, cfg.display.padding).numpy())
    tensors = {"latents": latents}
    if reference is not None:
        tensors["reference_cells"] = reference.cell_mask()[0].to(torch.uint8).cpu()
    write_safetensors(str(paths["latents"]), tensors)
    return paths


@hydra.main(version_base=None, config_path="../configs", config_name="sample_video4d")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: sample and print where the outputs were written."""
    out_dir = cfg.output.dir if cfg.output.dir is not None else HydraConfig.get().runtime.output_dir
    paths = generate(cfg, out_dir)
    print(f"wrote {paths['image']} and {paths['latents']}")


if __name__ == "__main__":
    main()
