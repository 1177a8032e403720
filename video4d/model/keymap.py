"""State-dict key formats: the official Wan2.1 ``WanModel`` names (ours) and diffusers'
``WanTransformer3DModel`` names, plus wrapper prefixes such as ``model.`` or ``module.``.

Only names are changed; tensors are passed through untouched (same layouts in both formats). Keys
that neither format knows (e.g. our variants' ``blocks.i.cross_view_attn.*`` / ``blocks.i.sync.*``)
are kept as they are, so ``from_diffusers(to_diffusers(s)) == s``.
"""
from __future__ import annotations

import re
from typing import Mapping, TypeVar

__all__ = ["to_diffusers", "from_diffusers", "is_diffusers_format", "strip_wrapper_prefix", "to_official"]

V = TypeVar("V")

_TOP = {
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "head.head": "proj_out",
}
_TOP_PARAMS = {"head.modulation": "scale_shift_table"}
_BLOCK = {
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    **{f"{ours}.{p}": f"{theirs}.{d}" for ours, theirs in (("self_attn", "attn1"), ("cross_attn", "attn2"))
       for p, d in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"), ("norm_q", "norm_q"), ("norm_k", "norm_k"))},
}
_BLOCK_PARAMS = {"modulation": "scale_shift_table"}
_BLOCK_KEY = re.compile(r"^(blocks\.\d+\.)(.+)$")
_WRAPPER_PREFIXES = ("module.", "model.")


def _rename(key: str, top: dict, top_params: dict, block: dict, block_params: dict) -> str:
    match = _BLOCK_KEY.match(key)
    prefix, rest = (match.group(1), match.group(2)) if match else ("", key)
    modules, params = (block, block_params) if match else (top, top_params)
    if rest in params:
        return prefix + params[rest]
    module, _, leaf = rest.rpartition(".")
    if module in modules:
        return f"{prefix}{modules[module]}.{leaf}"
    return key


def _invert(d: dict) -> dict:
    return {v: k for k, v in d.items()}


def to_diffusers(state: Mapping[str, V]) -> dict[str, V]:
    """Official Wan2.1 key names -> diffusers ``WanTransformer3DModel`` names (values unchanged)."""
    return {_rename(k, _TOP, _TOP_PARAMS, _BLOCK, _BLOCK_PARAMS): v for k, v in state.items()}


def from_diffusers(state: Mapping[str, V]) -> dict[str, V]:
    """diffusers ``WanTransformer3DModel`` key names -> official Wan2.1 names (values unchanged)."""
    inv = [_invert(d) for d in (_TOP, _TOP_PARAMS, _BLOCK, _BLOCK_PARAMS)]
    return {_rename(k, *inv): v for k, v in state.items()}


def is_diffusers_format(keys) -> bool:
    """True when the key names are diffusers' (``condition_embedder.*``, ``proj_out.*``, ``attn1``...)."""
    return any(
        k.startswith(("condition_embedder.", "proj_out.")) or k == "scale_shift_table" or ".attn1." in k
        for k in keys
    )


def strip_wrapper_prefix(state: Mapping[str, V]) -> dict[str, V]:
    """Remove a ``module.`` / ``model.`` prefix shared by every key (repeatedly, e.g. ``module.model.``)."""
    state = dict(state)
    while state:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def to_official(state: Mapping[str, V]) -> dict[str, V]:
    """Any supported checkpoint layout -> official key names: strips wrapper prefixes and converts
    diffusers names when detected."""
    state = strip_wrapper_prefix(state)
    return from_diffusers(state) if is_diffusers_format(state) else state
