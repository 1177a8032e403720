"""Attention backends (split, flex, dense) agree with a dense-mask reference, forward and backward."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from video4d.attention import attend, resolve_backend
from video4d.attention.flex import flex_attention_grid
from video4d.attention.split import split_attention
from video4d.grid import GridShape

PATTERNS = ("view_or_time", "view", "time")


def _qkv(grid: GridShape, dtype=torch.float32, B=2, H=3, D=8, requires_grad=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, grid.num_tokens, H, D, generator=gen, dtype=dtype).requires_grad_(requires_grad) for _ in range(3)]


def _reference(q, k, v, grid: GridShape, pattern: str) -> torch.Tensor:
    """Plain softmax attention with a mask built by decoding (view, time) of every token."""
    frame = torch.arange(grid.num_tokens) // grid.tokens_per_frame
    view, time = frame // grid.T, frame % grid.T
    allowed = {
        "full": torch.ones(grid.num_tokens, grid.num_tokens, dtype=torch.bool),
        "view_or_time": (view[:, None] == view) | (time[:, None] == time),
        "view": view[:, None] == view,
        "time": time[:, None] == time,
    }[pattern]
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / q.shape[-1] ** 0.5
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return torch.einsum("bhnm,bmhd->bnhd", probs, v)


@pytest.mark.parametrize("grid", [GridShape(3, 4, 2, 3), GridShape(2, 2, 1, 5)], ids=str)
@pytest.mark.parametrize("impl", ["aten", "torch"])
def test_split_forward_and_gradients_match_reference_float64(grid, impl):
    for pattern in PATTERNS:
        q, k, v = _qkv(grid, torch.float64, requires_grad=True)
        grad_out = torch.randn(2, grid.num_tokens, 3, 8, dtype=torch.float64)
        ref = _reference(q, k, v, grid, pattern)
        out = split_attention(q, k, v, grid, pattern, impl=impl)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
        expected = torch.autograd.grad(ref, (q, k, v), grad_out)
        got = torch.autograd.grad(out, (q, k, v), grad_out)
        for name, g, e in zip("qkv", got, expected):
            torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11, msg=f"d{name} ({pattern}, {impl})")


def test_split_gradients_float32_through_attend_auto():
    grid = GridShape(4, 3, 2, 2)
    q, k, v = _qkv(grid, requires_grad=True, seed=1)
    out = attend(q, k, v, grid)
    loss = (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum()
    loss.backward()
    q2, k2, v2 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = _reference(q2, k2, v2, grid, "view_or_time")
    (ref * torch.linspace(-1, 1, ref.numel(), dtype=torch.float64).reshape(ref.shape)).sum().backward()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    for x, x2 in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(x.grad.double(), x2.grad, rtol=1e-4, atol=1e-5)


def test_split_bfloat16_close_to_reference():
    grid = GridShape(3, 3, 2, 4)
    q, k, v = _qkv(grid, seed=2)
    out = split_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), grid)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), _reference(q, k, v, grid, "view_or_time"), rtol=0.05, atol=0.03)


@pytest.mark.parametrize("grid", [GridShape(1, 4, 2, 3), GridShape(4, 1, 2, 3)], ids=str)
@pytest.mark.parametrize("backend", ["split", "dense", "flex"])
def test_single_view_or_single_time_is_full_attention(grid, backend):
    q, k, v = _qkv(grid, seed=3)
    full = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = attend(q, k, v, grid, "view_or_time", backend)
    torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)
    single = "view" if grid.V == 1 else "time"
    torch.testing.assert_close(attend(q, k, v, grid, single, "split"), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grid,pad", [(GridShape(3, 2, 5, 7), False), (GridShape(3, 2, 5, 7), True), (GridShape(2, 3, 4, 4), None)], ids=str)
def test_flex_forward_equals_split_and_dense(grid, pad):
    q, k, v = _qkv(grid, seed=4)
    for pattern in PATTERNS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flex = flex_attention_grid(q, k, v, grid, pattern, pad_frames=pad, block_size=16)
        torch.testing.assert_close(flex, split_attention(q, k, v, grid, pattern), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(flex, attend(q, k, v, grid, pattern, "dense"), rtol=1e-5, atol=1e-5)


def test_flex_with_grad_on_cpu_raises_and_auto_picks_split():
    grid = GridShape(2, 2, 2, 2)
    q, k, v = _qkv(grid, requires_grad=True)
    with pytest.raises(ValueError, match="no backward on CPU"):
        attend(q, k, v, grid, backend="flex")
    assert resolve_backend("auto", "cpu") == "split"
    assert resolve_backend("auto", "cuda") == "flex"


def test_clear_errors_for_bad_inputs():
    grid = GridShape(2, 3, 2, 2)
    q, k, v = _qkv(GridShape(2, 3, 2, 3))
    with pytest.raises(ValueError, match="sequence length 36 does not match"):
        attend(q, k, v, grid)
    q, k, v = _qkv(grid)
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'"):
        attend(q, k, v, grid, backend="xformers")
    with pytest.raises(ValueError, match="unknown attention pattern"):
        attend(q, k, v, grid, pattern="diag")
    with pytest.raises(ValueError, match="shapes differ"):
        attend(q, k[:, :, :2], v, grid)
