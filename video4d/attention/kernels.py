"""Attention within groups that also returns the log-sum-exp, and its backward given any (out, lse).

Layout: ``[G, H, L, D]`` (G independent groups, e.g. batch x views). ``lse`` is ``[G, H, L]`` in
float32 (float64 for float64 inputs): ``lse_i = log sum_j exp(scale * q_i . k_j)``.

``own_frame``: when set (CPU kernels and "torch" only), each group is a sequence of frames of
``own_frame`` tokens and a query does not attend to the keys of its own frame (an additive mask
with ``-inf`` on the diagonal blocks, cached per length).

The backward takes the *final* output and log-sum-exp of a larger attention whose keys are a union
of groups (see :mod:`video4d.attention.split`): with ``P_ij = exp(scale * q_i.k_j - lse_i)`` and
``D_i = dO_i . O_i`` the gradients of that attention restricted to this group's keys are
``dV = P^T dO``, ``dS = P * (dO V^T - D)``, ``dQ = scale * dS K``, ``dK = scale * dS^T Q``.
This is exactly what FlashAttention-style backward kernels compute from (out, lse), so they are
used as they are.

Kernels (:func:`kernel_for`), all fused (blocked, memory ``O(L * D)``, no ``L x L`` matrix) except
the last:

- ``"cpu_flash"``: ATen's CPU flash attention (``_scaled_dot_product_flash_attention_for_cpu`` and
  its backward), any float dtype;
- ``"cuda_flash"``: ATen's CUDA FlashAttention-2 (``_scaled_dot_product_flash_attention`` and its
  backward), float16 / bfloat16, head_dim a multiple of 8 up to 256, compute capability >= 8.0;
- ``"cuda_efficient"``: ATen's CUDA memory-efficient attention (``_scaled_dot_product_efficient_attention``
  and its backward, whose log-sum-exp is padded to a multiple of 32 queries), other CUDA cases;
- ``"torch"``: plain torch chunked over queries (memory ``O(chunk * L)`` per group and head), any
  device; the reference the fused kernels are tested against.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = ["MASKED_KERNELS", "accumulation_dtype", "attention_with_lse", "attention_backward", "kernel_for"]

MASKED_KERNELS = ("cpu_flash", "torch")  # the kernels that take the own-frame mask (additive, [L, L])

_CHUNK_BYTES = 256 * 2**20
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_HALF_DTYPES = (torch.bfloat16, torch.float16)
_EFFICIENT_LSE_ALIGN = 32  # the memory-efficient kernel pads its log-sum-exp to this many queries


def kernel_for(q: torch.Tensor, impl: str = "auto") -> str:
    """The kernel that runs ``q``'s device, dtype and head size (see the module docstring).

    ``impl``: "auto" (the fused kernel where one applies, else "torch"), "aten" (the fused kernel;
    ``ValueError`` where none applies) or "torch".
    """
    if impl not in ("auto", "aten", "torch"):
        raise ValueError(f"unknown kernel implementation {impl!r}; use 'auto', 'aten' or 'torch'")
    if impl == "torch":
        return "torch"
    fused = _fused_kernel(q)
    if fused is None and impl == "aten":
        raise ValueError(f"no fused ATen attention kernel for {q.dtype} on {q.device.type} (head_dim {q.shape[-1]}): use impl='torch'")
    return fused or "torch"


def _fused_kernel(q: torch.Tensor) -> str | None:
    if q.dtype not in _FLOAT_DTYPES:
        return None
    if q.device.type == "cpu":
        return "cpu_flash"
    if q.device.type != "cuda" or q.dtype == torch.float64:
        return None
    head_dim = q.shape[-1]
    if q.dtype in _HALF_DTYPES and head_dim % 8 == 0 and head_dim <= 256 and torch.cuda.get_device_capability(q.device) >= (8, 0):
        return "cuda_flash"
    return "cuda_efficient"


@functools.lru_cache(maxsize=16)
def _own_frame_mask(length: int, frame: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive mask ``[length, length]``: ``-inf`` where query and key lie in the same ``frame``-token block, else 0."""
    frames = torch.arange(length, device=device) // frame
    return torch.zeros(length, length, dtype=dtype, device=device).masked_fill_(frames[:, None] == frames[None, :], -math.inf)


def _mask(q: torch.Tensor, kernel: str, own_frame: int | None) -> torch.Tensor | None:
    if own_frame is None:
        return None
    if kernel not in MASKED_KERNELS:
        raise ValueError(f"the {kernel} kernel takes no mask: own_frame is for the CPU and torch kernels")
    return _own_frame_mask(q.shape[2], own_frame, q.dtype if kernel == "cpu_flash" else accumulation_dtype(q.dtype), q.device)


def _chunk(q: torch.Tensor, kv_len: int) -> int:
    G, H, _, _ = q.shape
    return max(1, _CHUNK_BYTES // (G * H * kv_len * 4))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, else float32: the dtype partial sums are kept in."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str = "auto", own_frame: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention ``q, k, v [G, H, L, D]`` -> (out ``[G, H, L, D]``, lse ``[G, H, L]``). No autograd."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    kernel = kernel_for(q, impl)
    mask = _mask(q, kernel, own_frame)
    with torch.no_grad():
        if kernel == "cpu_flash":
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=mask, scale=scale)
            return out, lse.to(accumulation_dtype(q.dtype))
        if kernel == "cuda_flash":
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)[:2]
            return out, lse
        if kernel == "cuda_efficient":
            out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False, scale=scale)[:2]
            return out, lse[..., : q.shape[2]]
        return _torch_forward(q, k, v, scale, mask)


def attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    impl: str = "auto",
    own_frame: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv), each shaped like its input ``[G, H, L, D]``, for probabilities
    ``exp(scale * q k^T - lse)`` and output ``out`` (all ``[G, H, L, ...]``; see the module docstring)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    kernel = kernel_for(q, impl)
    mask = _mask(q, kernel, own_frame)
    L = q.shape[2]
    with torch.no_grad():
        if kernel == "cpu_flash":
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                grad_out, q, k, v, out, lse.to(accumulation_dtype(q.dtype)), 0.0, False, attn_mask=mask, scale=scale
            )
        # Without dropout the CUDA kernels never read the philox seed / offset.
        if kernel == "cuda_flash":
            unused = torch.empty((), dtype=torch.int64)
            return torch.ops.aten._scaled_dot_product_flash_attention_backward(
                grad_out, q, k, v, out, lse.float().contiguous(), None, None, L, k.shape[2], 0.0, False, unused, unused, scale=scale
            )
        if kernel == "cuda_efficient":
            unused = torch.empty((), dtype=torch.int64, device=q.device)
            padded = F.pad(lse.float(), (0, -L % _EFFICIENT_LSE_ALIGN)).contiguous()
            return torch.ops.aten._scaled_dot_product_efficient_attention_backward(
                grad_out, q, k, v, None, out, padded, unused, unused, 0.0, [True, True, True, False], False, scale=scale
            )[:3]
        return _torch_backward(grad_out, q, k, v, out, lse, scale, mask)


def _torch_forward(q, k, v, scale: float, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    acc = accumulation_dtype(q.dtype)
    kf, vf = k.to(acc), v.to(acc)
    outs, lses = [], []
    step = _chunk(q, k.shape[2])
    for i, qc in enumerate(q.split(step, dim=2)):
        scores = (qc.to(acc) @ kf.transpose(-1, -2)) * scale
        if mask is not None:
            scores += mask[i * step : (i + 1) * step]
        lse = scores.logsumexp(dim=-1)
        outs.append(((scores - lse[..., None]).exp() @ vf).to(q.dtype))
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _torch_backward(grad_out, q, k, v, out, lse, scale: float, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    acc = accumulation_dtype(q.dtype)
    kf, vf = k.to(acc), v.to(acc)
    dk, dv = torch.zeros_like(kf), torch.zeros_like(vf)
    dqs = []
    step = _chunk(q, k.shape[2])
    for i in range(0, q.shape[2], step):
        qc, doc = q[:, :, i : i + step].to(acc), grad_out[:, :, i : i + step].to(acc)
        delta = (doc * out[:, :, i : i + step].to(acc)).sum(-1, keepdim=True)
        scores = (qc @ kf.transpose(-1, -2)) * scale
        if mask is not None:
            scores += mask[i : i + step]
        probs = (scores - lse[:, :, i : i + step, None].to(acc)).exp()
        dv += probs.transpose(-1, -2) @ doc
        dscores = probs * (doc @ vf.transpose(-1, -2) - delta) * scale
        dqs.append(dscores @ kf)
        dk += dscores.transpose(-1, -2) @ qc
    return torch.cat(dqs, dim=2).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
