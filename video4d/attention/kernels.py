"""Unmasked attention that also returns the log-sum-exp, and its backward given any (out, lse).

Layout: ``[G, H, L, D]`` (G independent groups, e.g. batch x views). ``lse`` is ``[G, H, L]`` in
float32 (float64 for float64 inputs): ``lse_i = log sum_j exp(scale * q_i . k_j)``.

The backward takes the *final* output and log-sum-exp of a larger attention whose keys are a union
of groups (see :mod:`video4d.attention.split`): with ``P_ij = exp(scale * q_i.k_j - lse_i)`` and
``D_i = dO_i . O_i`` the gradients of that attention restricted to this group's keys are
``dV = P^T dO``, ``dS = P * (dO V^T - D)``, ``dQ = scale * dS K``, ``dK = scale * dS^T Q``.

Two implementations: CPU uses the fused flash-attention kernels of ATen (blocked, memory
``O(L * D)``); other devices use a plain torch version chunked over queries (memory
``O(chunk * L)`` per group and head).
"""
from __future__ import annotations

import math

import torch

__all__ = ["accumulation_dtype", "attention_with_lse", "attention_backward"]

_CHUNK_BYTES = 256 * 2**20
_ATEN_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _use_aten(q: torch.Tensor, impl: str) -> bool:
    if impl not in ("auto", "aten", "torch"):
        raise ValueError(f"unknown kernel implementation {impl!r}; use 'auto', 'aten' or 'torch'")
    if impl == "auto":
        return q.device.type == "cpu" and q.dtype in _ATEN_DTYPES
    return impl == "aten"


def _chunk(q: torch.Tensor, kv_len: int) -> int:
    G, H, _, _ = q.shape
    return max(1, _CHUNK_BYTES // (G * H * kv_len * 4))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, else float32: the dtype partial sums are kept in."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention ``q, k, v [G, H, L, D]`` -> (out ``[G, H, L, D]``, lse ``[G, H, L]``). No autograd."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    with torch.no_grad():
        if _use_aten(q, impl):
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=scale)
            return out, lse.to(accumulation_dtype(q.dtype))
        acc = accumulation_dtype(q.dtype)
        kf, vf = k.to(acc), v.to(acc)
        outs, lses = [], []
        for qc in q.split(_chunk(q, k.shape[2]), dim=2):
            scores = (qc.to(acc) @ kf.transpose(-1, -2)) * scale
            lse = scores.logsumexp(dim=-1)
            outs.append(((scores - lse[..., None]).exp() @ vf).to(q.dtype))
            lses.append(lse)
        return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv), each shaped like its input ``[G, H, L, D]``, for probabilities
    ``exp(scale * q k^T - lse)`` and output ``out`` (all ``[G, H, L, ...]``; see the module docstring)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    with torch.no_grad():
        if _use_aten(q, impl):
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                grad_out, q, k, v, out, lse.to(accumulation_dtype(q.dtype)), 0.0, False, scale=scale
            )
        acc = accumulation_dtype(q.dtype)
        kf, vf = k.to(acc), v.to(acc)
        dk, dv = torch.zeros_like(kf), torch.zeros_like(vf)
        dqs = []
        step = _chunk(q, k.shape[2])
        for i in range(0, q.shape[2], step):
            qc, doc = q[:, :, i : i + step].to(acc), grad_out[:, :, i : i + step].to(acc)
            delta = (doc * out[:, :, i : i + step].to(acc)).sum(-1, keepdim=True)
            probs = ((qc @ kf.transpose(-1, -2)) * scale - lse[:, :, i : i + step, None].to(acc)).exp()
            dv += probs.transpose(-1, -2) @ doc
            dscores = probs * (doc @ vf.transpose(-1, -2) - delta) * scale
            dqs.append(dscores @ kf)
            dk += dscores.transpose(-1, -2) @ qc
        return torch.cat(dqs, dim=2).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
