"""Mask predicates and sparsity of the 4D attention patterns, against brute force."""
import math

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

from video4d.attention import PATTERNS, block_mask, dense_mask, sparsity_report
from video4d.attention.flex import choose_layout
from video4d.attention.masks import BlockLayout, mask_mod
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


def _brute_blocks(grid: GridShape, pattern: str, layout: BlockLayout) -> tuple[int, int, int]:
    """(computed, full, total) blocks by building the padded N x N mask and looking at every block."""
    stride = layout.stride(grid)
    L = grid.num_frames * stride
    pos = torch.arange(L)
    frame, real = pos // stride, (pos % stride) < grid.tokens_per_frame
    V_, T_ = frame // grid.T, frame % grid.T
    same_v, same_t = V_[:, None] == V_[None, :], T_[:, None] == T_[None, :]
    mask = {"full": same_v | ~same_v, "view_or_time": same_v | same_t, "view": same_v, "time": same_t}[pattern]
    mask = mask & real[None, :]
    bq, bk = layout.q_block, layout.kv_block
    nq, nk = math.ceil(L / bq), math.ceil(L / bk)
    padded = torch.zeros(nq * bq, nk * bk, dtype=torch.bool)
    padded[:L, :L] = mask
    per_block = padded.reshape(nq, bq, nk, bk).sum((1, 3))
    return int((per_block > 0).sum()), int((per_block == bq * bk).sum()), nq * nk


LAYOUTS = [BlockLayout(8, 8), BlockLayout(16, 16, True), BlockLayout(16, 8), BlockLayout(8, 16, True), BlockLayout(4, 16)]


@pytest.mark.parametrize("V,T,h,w", [(3, 4, 2, 3), (4, 4, 3, 3), (2, 3, 4, 4), (3, 2, 5, 7)])
@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_sparsity_report_vs_closed_form_and_brute_force(V, T, h, w, layout):
    grid = GridShape(V, T, h, w)
    for pattern in PATTERNS:
        report = sparsity_report(grid, layout, pattern)
        computed, full, total = _brute_blocks(grid, pattern, layout)
        assert (report.computed_blocks, report.full_blocks, report.num_blocks) == (computed, full, total)
        assert report.block_sparsity == pytest.approx(1 - computed / total, abs=1e-12)
        allowed = dense_mask(grid, pattern)
        assert report.element_sparsity == pytest.approx(1.0 - allowed.float().mean().item(), abs=1e-6)
        assert report.needed_blocks == pytest.approx(allowed.sum().item() / (layout.q_block * layout.kv_block))
    fused = sparsity_report(grid, layout)
    assert fused.element_sparsity == pytest.approx(1 - (V + T - 1) / (V * T), abs=1e-12)
    if layout.pad_frames and layout.q_block == layout.kv_block:
        assert fused.block_sparsity == pytest.approx(fused.element_sparsity, abs=1e-12)


def test_layout_choice_at_paper_grids_within_five_percent():
    """V x T in {4x4, 8x8, 8x16} at 144x256 / 288x512 / 480x832 (144 / 576 / 1560 tokens per frame)."""
    grid = GridShape(8, 8, 9, 16)
    plain, padded = sparsity_report(grid), sparsity_report(grid, BlockLayout(pad_frames=True))
    assert plain.element_sparsity == pytest.approx(1 - 15 / 64)
    assert plain.work_ratio > 1.6  # 144-token frames straddle 128-token blocks
    assert padded.block_sparsity == pytest.approx(1 - 15 / 64) and padded.seq_len == 64 * 256
    for h, w in ((9, 16), (18, 32), (30, 52)):
        for V, T in ((4, 4), (8, 8), (8, 16)):
            grid = GridShape(V, T, h, w)
            layout = choose_layout(grid, "view_or_time")
            assert sparsity_report(grid, layout).work_ratio <= 1.05, (grid, layout)
    assert choose_layout(GridShape(8, 8, 9, 16), "view_or_time") == BlockLayout(16, 16)
    assert choose_layout(GridShape(8, 8, 18, 32), "view_or_time") == BlockLayout(64, 64)


@pytest.mark.parametrize("layout", [BlockLayout(16, 16), BlockLayout(16, 16, True), BlockLayout(32, 16, True), BlockLayout(16, 32)], ids=str)
def test_block_mask_equals_create_block_mask(layout):
    grid = GridShape(3, 2, 5, 7)
    for pattern in ("view_or_time", "view", "time"):
        ours = block_mask(grid, pattern, "cpu", layout)
        L = ours.seq_lengths[0]
        ref = create_block_mask(mask_mod(grid, pattern, layout.stride(grid)), None, None, L, L, device="cpu",
                                BLOCK_SIZE=(layout.q_block, layout.kv_block))
        assert torch.equal(ours.to_dense(), ref.to_dense())
        assert torch.equal(ours.kv_num_blocks, ref.kv_num_blocks)
        assert torch.equal(ours.full_kv_num_blocks, ref.full_kv_num_blocks)
        assert torch.equal(ours.q_num_blocks, ref.q_num_blocks)
        report = sparsity_report(grid, layout, pattern)
        assert ours.sparsity() == pytest.approx(100 * report.block_sparsity)
        assert int(ours.kv_num_blocks.sum() + ours.full_kv_num_blocks.sum()) == report.computed_blocks


def test_block_mask_cached_per_shape():
    grid = GridShape(2, 3, 4, 4)
    first = block_mask(grid, "view_or_time", "cpu", BlockLayout(16, 16, True))
    assert block_mask(GridShape(2, 3, 4, 4), "view_or_time", torch.device("cpu"), BlockLayout(16, 16, True)) is first
    assert block_mask(grid, "view_or_time", "cpu", BlockLayout(16, 16)) is not first
    assert block_mask(grid, "view", "cpu", BlockLayout(16, 16, True)) is not first


def test_unknown_pattern_raises():
    with pytest.raises(ValueError, match="unknown attention pattern 'diagonal'"):
        sparsity_report(GridShape(2, 2, 1, 1), pattern="diagonal")
    with pytest.raises(ValueError, match="q_block must be a positive int"):
        BlockLayout(0, 16)

