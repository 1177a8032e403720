"""DeepSpeed-Ulysses sequence parallelism for the 4D DiT: one sample's tokens split over a process group.

The ``N`` ranks of a sequence-parallel group hold the same sample. From the patch embedding to the
output head each rank keeps ``n = ceil(S / N)`` consecutive tokens of the view-major sequence
(``S = V * T * h * w``), the sequence zero-padded at its end to ``N * n``:

* :meth:`SequenceParallel.shard` slices the patch embeddings (reference embeddings already added)
  and :meth:`~SequenceParallel.shard_rope` the RoPE table, so each rank rotates its own tokens;
* self-attention (:meth:`~SequenceParallel.attend`) goes through DeepSpeed's
  ``DistributedAttention``: an all-to-all turns q, k, v from ``[B, n, H, D]`` (this rank's tokens,
  all heads) into ``[B, N * n, H / N, D]`` (every token, this rank's heads); the padding is cut
  off, the unchanged grid attention (:func:`video4d.attention.attend`: flex BlockMask, split, dense)
  runs with the grid's full mask, the result is padded again and the reverse all-to-all brings
  ``[B, n, H, D]`` back. A padded token therefore never attends and is never attended;
* q/k RMSNorm (over the whole ``dim``, i.e. across heads), cross-attention, FFN, modulation and
  the head stay local; :meth:`~SequenceParallel.gather` all-gathers the head output and drops the
  padding, so every rank returns the whole prediction.

Gradients: the gather's backward keeps this rank's slice of the output gradient (every rank
computes the same loss on the same gathered output), so the parameter gradients of a rank are the
share of its tokens and the full gradient is their SUM over the group. That is the reduction
DeepSpeed applies with a sequence-parallel ``mpu`` (ZeRO sums over the sequence-parallel group and
averages over data-parallel replicas).

DeepSpeed (``deepspeed.comm`` and ``deepspeed.sequence.layer``) is imported only when a group is set.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from video4d.attention import attend
from video4d.grid import GridShape

__all__ = ["SequenceParallel", "check_sequence_parallel", "allowed_sizes"]


def allowed_sizes(num_heads: int) -> list[int]:
    """Sequence-parallel sizes a DiT with ``num_heads`` heads allows: the divisors of ``num_heads``."""
    return [n for n in range(1, num_heads + 1) if num_heads % n == 0]


def check_sequence_parallel(size: int, num_heads: int) -> None:
    """Raise a one-line ``ValueError`` unless ``size`` divides ``num_heads`` (Ulysses splits the heads)."""
    if size < 1 or num_heads % size:
        raise ValueError(f"sequence_parallel={size} must divide the DiT's num_heads={num_heads}: "
                         f"use one of {', '.join(map(str, allowed_sizes(num_heads)))}")


class _Rope:
    """This rank's rows of a :class:`video4d.model.rope.RopeCache`: ``cos``/``sin`` ``[n, head_dim / 2]``."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        self.cos, self.sin = cos, sin


class _GridAttention(nn.Module):
    """The local attention of ``DistributedAttention``: q, k, v ``[B, N * n, H / N, D]`` (whole
    padded sequence, this rank's heads) -> ``attend`` over the real tokens -> padded ``[B, N * n, H / N, D]``."""

    def forward(self, q, k, v, grid: GridShape, pattern: str, backend: str) -> torch.Tensor:
        S, padded = grid.num_tokens, q.shape[1]
        out = attend(q[:, :S], k[:, :S], v[:, :S], grid, pattern=pattern, backend=backend)
        return F.pad(out, (0, 0, 0, 0, 0, padded - S)) if padded > S else out


class _GatherTokens(torch.autograd.Function):
    """All-gather ``[B, n, ...]`` along the tokens into ``[B, N * n, ...]``; backward: this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, rank: int, size: int) -> torch.Tensor:
        ctx.rank, ctx.n = rank, x.shape[1]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.narrow(1, ctx.rank * ctx.n, ctx.n).contiguous(), None, None, None


class SequenceParallel:
    """Ulysses over ``group`` (a ``torch.distributed`` process group of ``N`` ranks) for a DiT with
    ``num_heads`` heads (``N`` must divide it: :func:`check_sequence_parallel`).

    Attributes: ``group``, ``size`` (N), ``rank`` (this rank's place in the group, which token slice
    it holds). Every rank of the group must call the model on the same inputs.
    """

    def __init__(self, group, num_heads: int) -> None:
        import deepspeed.comm as ds_comm
        from deepspeed.sequence.layer import DistributedAttention

        if not ds_comm.is_initialized():  # wraps the existing torch.distributed process group
            ds_comm.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False)
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        check_sequence_parallel(self.size, num_heads)
        # batch-first [B, S, H, D]: scatter the heads (dim 2), gather the sequence (dim 1)
        self._attention = DistributedAttention(_GridAttention(), group, scatter_idx=2, gather_idx=1)

    def local_tokens(self, num_tokens: int) -> int:
        """Tokens per rank ``n = ceil(S / N)`` (padding included) for a sequence of ``S`` tokens."""
        return -(-num_tokens // self.size)

    def _slice(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's slice of ``x`` along its token axis ``dim`` (zero-padded), as a copy."""
        num_tokens = x.shape[dim]
        n = self.local_tokens(num_tokens)
        pad = self.size * n - num_tokens
        if pad:
            x = F.pad(x, (0, 0) * (x.dim() - dim - 1) + (0, pad))
        return x.narrow(dim, self.rank * n, n).clone()  # a copy: the full sequence can be freed

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, S, dim]`` (the same on every rank) -> this rank's ``[B, n, dim]``."""
        return self._slice(x, 1)

    def shard_rope(self, rope) -> _Rope:
        """RoPE angles of the whole grid (``cos``/``sin`` ``[S, d/2]``) -> this rank's rows ``[n, d/2]``."""
        return _Rope(self._slice(rope.cos, 0), self._slice(rope.sin, 0))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: GridShape, pattern: str, backend: str) -> torch.Tensor:
        """Grid attention of this rank's ``q, k, v [B, n, H, D]`` over the whole sequence -> ``[B, n, H, D]``."""
        return self._attention(q, k, v, 0, None, grid, pattern, backend)

    def gather(self, x: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """This rank's ``[B, n, ...]`` -> the whole ``[B, S, ...]`` on every rank (padding dropped)."""
        return _GatherTokens.apply(x, self.group, self.rank, self.size)[:, :num_tokens]
