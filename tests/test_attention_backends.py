"""Attention backends (split, flex, dense) agree with a dense-mask reference, forward and backward."""
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from torch._subclasses.fake_tensor import FakeTensorMode

from video4d.attention import BlockLayout, attend, choose_backend, resolve_backend, split
from video4d.attention.auto import estimated_costs
from video4d.attention.flex import flex_attention_grid
from video4d.attention.kernels import kernel_for
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_split_half_precision_through_aten_close_to_reference(dtype):
    grid = GridShape(3, 3, 2, 4)
    q, k, v = _qkv(grid, seed=2)
    qh, kh, vh = (x.to(dtype).requires_grad_() for x in (q, k, v))
    assert kernel_for(qh.transpose(1, 2)) == "cpu_flash"
    out = split_attention(qh, kh, vh, grid)
    assert out.dtype == dtype
    q2, k2, v2 = (x.to(dtype).double().requires_grad_() for x in (q, k, v))
    ref = _reference(q2, k2, v2, grid, "view_or_time")
    torch.testing.assert_close(out.double(), ref, rtol=0.02, atol=0.02)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    out.backward(grad)
    ref.backward(grad.double())
    for x, x2 in ((qh, q2), (kh, k2), (vh, v2)):
        torch.testing.assert_close(x.grad.double(), x2.grad, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "mask_bytes,chunk_bytes,stage_times",
    [(0, None, None), (0, 1, None), (None, 1, None), (None, None, 2)],
    ids=["three-branches", "three-in-chunks", "two-in-chunks", "two-time-staged-by-2"],
)
@pytest.mark.parametrize("grid", [GridShape(3, 2, 2, 2), GridShape(2, 3, 1, 3)], ids=str)
def test_split_plans_and_chunks_equal_reference(monkeypatch, grid, mask_bytes, chunk_bytes, stage_times):
    """Both branch plans (three branches; two with the own frame masked in the shorter group, as the
    other tests run on CPU), whole or cut into several kernel calls per branch (the time grouping's
    copies staged ``stage_times`` time steps at a time: T = 3 leaves a shorter last chunk), give the reference."""
    if mask_bytes is not None:
        monkeypatch.setattr(split, "MASK_BYTES", mask_bytes)
    if chunk_bytes is not None:
        monkeypatch.setattr(split, "CHUNK_BYTES", chunk_bytes)
    assert len(split.branch_plan(grid, "cpu_flash")) == (3 if mask_bytes == 0 else 2)
    q, k, v = _qkv(grid, torch.float64, requires_grad=True, seed=6)
    if stage_times is not None:  # bytes of one tensor's time steps
        monkeypatch.setattr(split, "STAGE_BYTES", q.numel() * q.element_size() // grid.T * stage_times)
        assert len(split._chunks(split._grid_view(q, grid), "time", 5)) == -(-grid.T // stage_times)
    out = split_attention(q, k, v, grid)
    ref = _reference(q, k, v, grid, "view_or_time")
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    grad = torch.randn_like(out)
    for g, e in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype,kernel", [(torch.bfloat16, "cuda_flash"), (torch.float16, "cuda_flash"), (torch.float32, "cuda_efficient")], ids=str)
def test_split_cuda_kernels_trace_with_fake_tensors(monkeypatch, dtype, kernel):
    """The CUDA-only lines (ATen flash / memory-efficient ops, their arguments and output shapes)
    run under FakeTensorMode on a CPU-only machine; their numbers are checked by eval/perf/gpu_checks."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    grid = GridShape(2, 3, 2, 5)
    ctx = SimpleNamespace(save_for_backward=lambda *saved: setattr(ctx, "saved_tensors", saved))
    with FakeTensorMode():  # the autograd engine needs a real device: forward and backward are called directly
        q, k, v = (torch.empty(2, grid.num_tokens, 4, 64, device="cuda", dtype=dtype) for _ in range(3))
        assert kernel_for(q.transpose(1, 2)) == kernel
        out = split._ViewOrTime.forward(ctx, q, k, v, grid, "aten")
        assert out.shape == q.shape and out.dtype == dtype and out.device.type == "cuda"
        grads = split._ViewOrTime.backward(ctx, torch.empty_like(out))[:3]
        assert all(g.shape == q.shape and g.dtype == dtype and g.device.type == "cuda" for g in grads)


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


@pytest.mark.parametrize("layout", [BlockLayout(16, 16), BlockLayout(32, 16, True), None], ids=str)
def test_flex_forward_equals_split_and_dense(layout):
    """Every layout, padded or not, gives the dense-mask result (padding never changes a result)."""
    grid = GridShape(3, 2, 5, 7)
    q, k, v = _qkv(grid, seed=4)
    for pattern in PATTERNS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flex = flex_attention_grid(q, k, v, grid, pattern, layout=layout)
        torch.testing.assert_close(flex, split_attention(q, k, v, grid, pattern), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(flex, attend(q, k, v, grid, pattern, "dense"), rtol=1e-5, atol=1e-5)


def test_flex_with_grad_on_cpu_raises():
    grid = GridShape(2, 2, 2, 2)
    q, k, v = _qkv(grid, requires_grad=True)
    with pytest.raises(ValueError, match="no backward on CPU"):
        attend(q, k, v, grid, backend="flex")


def test_auto_decision_from_the_cost_model():
    """Deterministic choices: dense only where the split branches compute more pairs than a dense
    pass (V = T = 2) and its N x N mask is small; flex or split on CUDA; split for other patterns."""
    wan480, paper = (30, 52), (9, 16)
    assert choose_backend("cpu", GridShape(2, 2, *wan480), "view_or_time", True) == "dense"
    assert choose_backend("cpu", GridShape(2, 2, *wan480), "view_or_time", False) == "dense"
    for V, T in ((4, 4), (8, 8), (2, 8), (8, 2)):
        assert choose_backend("cpu", GridShape(V, T, *paper), "view_or_time", True) == "split"
    big = GridShape(2, 2, 64, 64)  # N = 16384: a 1.3 GiB mask, over the CPU cap
    assert "dense" not in estimated_costs("cpu", big, "view_or_time", True)
    assert choose_backend("cpu", big, "view_or_time", True) == "split"
    assert choose_backend("cuda", GridShape(8, 8, *paper), "view_or_time", True) in ("flex", "split")
    assert "dense" not in estimated_costs("cuda", GridShape(8, 16, *wan480), "view_or_time", True)
    for pattern in ("view", "time", "full"):
        assert choose_backend("cpu", GridShape(2, 2, *wan480), pattern, True) == "split"
    assert choose_backend("cpu", GridShape(1, 8, *wan480), "view_or_time", True) == "split"
    assert resolve_backend("auto", "cpu", GridShape(2, 2, *wan480)) == "dense"
    assert resolve_backend("auto", "cpu") == "split" and resolve_backend("auto", "cuda") == "flex"
    assert resolve_backend("flex", "cpu", GridShape(8, 8, *paper)) == "flex"


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
