"""Mask predicates and sparsity of the 4D attention patterns, against brute force."""
import math

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

from video4d.attention import PATTERNS, block_mask, dense_mask, sparsity_report
from video4d.attention.masks import frame_stride, mask_mod
from video4d.grid import GridShape

GRIDS = [GridShape(3, 2, 2, 3), GridShape(2, 4, 1, 5), GridShape(1, 3, 2, 2), GridShape(4, 1, 3, 1)]


def _brute_allowed(grid: GridShape, pattern: str, i: int, j: int) -> bool:
    """Token pair rule straight from the definition, decoding indices by hand."""
    fi, fj = i // grid.tokens_per_frame, j // grid.tokens_per_frame
    vi, ti, vj, tj = fi // grid.T, fi % grid.T, fj // grid.T, fj % grid.T
    return {"full": True, "view_or_time": vi == vj or ti == tj, "view": vi == vj, "time": ti == tj}[pattern]


@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_dense_mask_and_mask_mod_match_brute_force(grid, pattern):
    N = grid.num_tokens
    expected = torch.tensor([[_brute_allowed(grid, pattern, i, j) for j in range(N)] for i in range(N)])
    assert torch.equal(dense_mask(grid, pattern), expected)
    idx = torch.arange(N)
    zero = torch.zeros((), dtype=torch.long)
    from_mod = mask_mod(grid, pattern)(zero, zero, idx[:, None], idx[None, :])
    assert torch.equal(from_mod.expand(N, N), expected)


def _brute_block_sparsity(grid: GridShape, pattern: str, block_size: int, pad: bool) -> float:
    """Block sparsity by building the padded N x N mask and counting empty blocks."""
    stride = frame_stride(grid, block_size, pad)
    L = grid.num_frames * stride
    pos = torch.arange(L)
    frame, real = pos // stride, (pos % stride) < grid.tokens_per_frame
    V_, T_ = frame // grid.T, frame % grid.T
    same_v, same_t = V_[:, None] == V_[None, :], T_[:, None] == T_[None, :]
    mask = {"full": same_v | ~same_v, "view_or_time": same_v | same_t, "view": same_v, "time": same_t}[pattern]
    mask = mask & real[None, :]
    nb = math.ceil(L / block_size)
    padded = torch.zeros(nb * block_size, nb * block_size, dtype=torch.bool)
    padded[:L, :L] = mask
    blocks = padded.reshape(nb, block_size, nb, block_size).any(3).any(1)
    return 1.0 - blocks.double().mean().item()


@pytest.mark.parametrize("V,T,h,w,block", [(3, 4, 2, 3, 8), (4, 4, 3, 3, 16), (2, 3, 4, 4, 16), (3, 2, 5, 7, 16)])
@pytest.mark.parametrize("pad", [False, True])
def test_sparsity_report_vs_closed_form_and_brute_force(V, T, h, w, block, pad):
    grid = GridShape(V, T, h, w)
    for pattern in PATTERNS:
        report = sparsity_report(grid, block_size=block, pad_frames=pad, pattern=pattern)
        assert report.block_sparsity == pytest.approx(_brute_block_sparsity(grid, pattern, block, pad), abs=1e-12)
        brute_elements = 1.0 - dense_mask(grid, pattern).float().mean().item()
        assert report.element_sparsity == pytest.approx(brute_elements, abs=1e-6)
    fused = sparsity_report(grid, block_size=block, pad_frames=pad)
    assert fused.element_sparsity == pytest.approx(1 - (V + T - 1) / (V * T), abs=1e-12)
    if pad:
        assert fused.block_sparsity == pytest.approx(fused.element_sparsity, abs=1e-12)


def test_sparsity_at_paper_scale_without_dense_mask():
    """V=T=8: frames of 144 tokens straddle 128-blocks; padding recovers the element sparsity."""
    grid = GridShape(8, 8, 12, 12)
    plain, padded = sparsity_report(grid), sparsity_report(grid, pad_frames=True)
    assert plain.element_sparsity == pytest.approx(1 - 15 / 64)
    assert plain.block_sparsity < plain.element_sparsity - 0.1
    assert padded.block_sparsity == pytest.approx(1 - 15 / 64)
    assert padded.seq_len == 64 * 256


@pytest.mark.parametrize("pad", [False, True])
def test_block_mask_equals_create_block_mask(pad):
    grid, block = GridShape(3, 2, 5, 7), 16
    for pattern in ("view_or_time", "view", "time"):
        ours = block_mask(grid, pattern, "cpu", block, pad)
        L = ours.seq_lengths[0]
        ref = create_block_mask(mask_mod(grid, pattern, L // grid.num_frames), None, None, L, L, device="cpu", BLOCK_SIZE=block)
        assert torch.equal(ours.to_dense(), ref.to_dense())
        assert torch.equal(ours.kv_num_blocks, ref.kv_num_blocks)
        assert torch.equal(ours.full_kv_num_blocks, ref.full_kv_num_blocks)
        assert ours.sparsity() == pytest.approx(100 * sparsity_report(grid, block, pad, pattern).block_sparsity)


def test_block_mask_cached_per_shape():
    grid = GridShape(2, 3, 4, 4)
    first = block_mask(grid, "view_or_time", "cpu", 16, True)
    assert block_mask(GridShape(2, 3, 4, 4), "view_or_time", torch.device("cpu"), 16, True) is first
    assert block_mask(grid, "view_or_time", "cpu", 16, False) is not first
    assert block_mask(grid, "view", "cpu", 16, True) is not first


def test_unknown_pattern_raises():
    with pytest.raises(ValueError, match="unknown attention pattern 'diagonal'"):
        sparsity_report(GridShape(2, 2, 1, 1), pattern="diagonal")

