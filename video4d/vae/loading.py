"""Building the VAE and loading official or diffusers weights.

Accepted files (any fsspec URL, via :func:`fourd.weights.read_state_dict`): the official
``Wan2.1_VAE.pth`` (``torch.load(weights_only=True)``) or a safetensors file with the same keys,
and a diffusers ``AutoencoderKLWan`` checkpoint (``vae/diffusion_pytorch_model.safetensors`` or its
directory), whose keys are renamed to the official layout first.

diffusers -> official naming (from diffusers' AutoencoderKLWan and its Wan conversion script):

- ``quant_conv`` / ``post_quant_conv`` -> ``conv1`` / ``conv2`` (the latent projections);
- ``{encoder,decoder}.conv_in`` -> ``.conv1``; ``.norm_out`` -> ``.head.0``; ``.conv_out`` -> ``.head.2``;
- ``.mid_block.resnets.0`` / ``.attentions.0`` / ``.resnets.1`` -> ``.middle.0`` / ``.1`` / ``.2``;
- ``encoder.down_blocks.N`` -> ``encoder.downsamples.N`` (same flat index);
- ``decoder.up_blocks.S.resnets.J`` -> ``decoder.upsamples.{S*(R+2)+J}`` and
  ``decoder.up_blocks.S.upsamplers.0`` -> ``decoder.upsamples.{S*(R+2)+R+1}`` (R = num_res_blocks;
  each decoder stage has R+1 residual blocks then one resampler);
- in residual blocks ``norm1, conv1, norm2, conv2, conv_shortcut`` -> ``residual.0, residual.2,
  residual.3, residual.6, shortcut``; resamplers (``resample.1``, ``time_conv``) and attention
  (``norm``, ``to_qkv``, ``proj``) keep their names.
"""
from __future__ import annotations

import re
from typing import Mapping, Optional, Union

import torch

from fourd.weights import check_state_dict, config_from_metadata, config_metadata, load_into, read_state_dict, resolve_dtype
from video4d.vae.config import VAEConfig, resolve_config
from video4d.vae.model import WanVAE

__all__ = ["load_vae", "vae_metadata", "METADATA_KEY", "official_to_diffusers_key", "diffusers_to_official", "is_diffusers_state"]

METADATA_KEY = "vae_config"  # safetensors metadata entry holding the config JSON

_RESIDUAL_RENAMES = {"residual.0.": "norm1.", "residual.2.": "conv1.", "residual.3.": "norm2.", "residual.6.": "conv2.", "shortcut.": "conv_shortcut."}
_MIDDLE_RENAMES = {"0": "resnets.0", "1": "attentions.0", "2": "resnets.1"}


def _rename_residual(rest: str) -> str:
    for official, diffusers in _RESIDUAL_RENAMES.items():
        if rest.startswith(official):
            return diffusers + rest[len(official) :]
    return rest


def official_to_diffusers_key(key: str, num_res_blocks: int) -> str:
    """Name of official VAE parameter ``key`` in a diffusers ``AutoencoderKLWan`` state dict.

    ``num_res_blocks``: :attr:`VAEConfig.num_res_blocks` (fixes the decoder's stage grouping).
    """
    if key.startswith("conv1."):
        return "quant_conv." + key[len("conv1.") :]
    if key.startswith("conv2."):
        return "post_quant_conv." + key[len("conv2.") :]
    part, rest = key.split(".", 1)
    if rest.startswith("conv1."):
        return f"{part}.conv_in.{rest[len('conv1.'):]}"
    if rest.startswith("head.0."):
        return f"{part}.norm_out.{rest[len('head.0.'):]}"
    if rest.startswith("head.2."):
        return f"{part}.conv_out.{rest[len('head.2.'):]}"
    m = re.match(r"middle\.(\d+)\.(.*)", rest)
    if m:
        return f"{part}.mid_block.{_MIDDLE_RENAMES[m.group(1)]}.{_rename_residual(m.group(2))}"
    m = re.match(r"downsamples\.(\d+)\.(.*)", rest)
    if m:
        return f"{part}.down_blocks.{m.group(1)}.{_rename_residual(m.group(2))}"
    m = re.match(r"upsamples\.(\d+)\.(.*)", rest)
    if m:
        stage, j = divmod(int(m.group(1)), num_res_blocks + 2)
        inner = "upsamplers.0" if j == num_res_blocks + 1 else f"resnets.{j}"
        return f"{part}.up_blocks.{stage}.{inner}.{_rename_residual(m.group(2))}"
    raise KeyError(f"not an official Wan2.1 VAE key: {key}")


def is_diffusers_state(state: Mapping[str, torch.Tensor]) -> bool:
    """True when ``state`` uses diffusers ``AutoencoderKLWan`` names (``quant_conv``, ``encoder.conv_in`` ...)."""
    return any(k.startswith(("quant_conv.", "post_quant_conv.", "encoder.conv_in.", "decoder.conv_in.")) for k in state)


def diffusers_to_official(state: Mapping[str, torch.Tensor], model: WanVAE) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``AutoencoderKLWan`` state dict to ``model``'s (official) keys.

    Keys that have no official counterpart are kept under their diffusers name, so strict loading
    reports them as unexpected.
    """
    r = model.config.num_res_blocks
    to_official = {official_to_diffusers_key(k, r): k for k in model.state_dict()}
    return {to_official.get(k, k): v for k, v in state.items()}


def load_vae(
    config: Union[None, str, VAEConfig, Mapping] = None,
    weights: Optional[Union[str, Mapping[str, torch.Tensor]]] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    dtype: Union[None, str, torch.dtype] = None,
) -> WanVAE:
    """Build the VAE and, when ``weights`` is given, load it strictly (official or diffusers naming;
    a missing file raises :class:`fourd.weights.WeightsNotFoundError` naming it).

    ``config``: ``"wan2.1-vae"``, ``"tiny"``, a :class:`VAEConfig` or a mapping of its fields; None =
    read from the weights file's ``vae_config`` safetensors metadata (:func:`vae_metadata`; the
    trained VAE's export stores its measured ``latents_mean`` / ``latents_std`` there).
    ``weights``: an fsspec URL (file or diffusers folder) or an in-memory state dict; None = random
    init seeded with ``config.init_seed`` in a forked RNG (the global RNG is neither used nor changed,
    so ``load_vae("tiny")`` is the same VAE everywhere). ``device="meta"`` builds without memory (key
    inspection). ``dtype``: torch dtype or name, None = float32.
    Returns a :class:`WanVAE` in eval mode on ``device``.
    """
    if config is None:
        config = config_from_metadata(weights, METADATA_KEY, "load_vae")
    cfg = resolve_config(config)
    dtype = resolve_dtype(dtype)
    if torch.device(device).type == "meta":
        with torch.device("meta"):
            model = WanVAE(cfg).to(dtype).eval()
        if weights is not None:  # key and shape check only
            check_state_dict(model, _official(_read(weights), model), source=_source(weights))
        return model
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = WanVAE(cfg)  # built on the CPU: the same values whatever the device
        return model.to(device=device, dtype=dtype).eval()
    state = _read(weights)
    with torch.device("meta"):
        model = WanVAE(cfg)
    model = model.to_empty(device=device).to(dtype)
    load_into(model, _official(state, model), strict=True, source=_source(weights))
    return model.eval()


def _read(weights: Union[str, Mapping[str, torch.Tensor]]) -> Mapping[str, torch.Tensor]:
    return weights if isinstance(weights, Mapping) else read_state_dict(weights, what="Wan2.1 VAE weights")


def _official(state: Mapping[str, torch.Tensor], model: WanVAE) -> Mapping[str, torch.Tensor]:
    return diffusers_to_official(state, model) if is_diffusers_state(state) else state


def _source(weights) -> str:
    return "VAE state dict" if isinstance(weights, Mapping) else f"VAE weights {weights}"


def vae_metadata(config: Union[VAEConfig, Mapping]) -> dict[str, str]:
    """Safetensors metadata (``vae_config``: the :class:`VAEConfig` fields as JSON, latent statistics
    included) that lets ``load_vae(weights=file)`` rebuild ``config``. Pass it as
    ``write_safetensors(url, vae.state_dict(), metadata=vae_metadata(vae.config))``."""
    return config_metadata(METADATA_KEY, resolve_config(config))
