"""Behaviour of the 4D DiT: variants, invariants, positions, reference conditioning, checkpointing,
trainable selection, mixed precision and input checks (tiny config, CPU, fp32)."""
from __future__ import annotations

import pytest
import torch

from video4d.grid import ReferenceCells, ReferenceLatents
from video4d.model import load_dit, select_trainable
from video4d.model.config import VARIANTS
from video4d.model.rope import axis_channels


def make(variant="fused", init="random", seed=0, state=None, **overrides):
    torch.manual_seed(seed)
    config = {"preset": "tiny", "attention_variant": variant, **overrides}
    return load_dit(config, state, init=init) if state is not None else load_dit(config, init=init)


def inputs(B=2, V=2, T=3, H=4, W=4, L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, T, 16, H, W, generator=g), torch.tensor([810.0, 45.0])[:B], torch.randn(B, L, 32, generator=g)


def test_single_view_fused_equals_full_and_several_views_differ():
    fused = make("fused")
    full = make("full", state=fused.state_dict())
    x, t, ctx = inputs(V=1)
    torch.testing.assert_close(fused(x, t, ctx), full(x, t, ctx), rtol=1e-6, atol=1e-6)
    x, t, ctx = inputs(V=2)
    assert (fused(x, t, ctx) - full(x, t, ctx)).abs().max() > 1e-3


def test_official_init_outputs_zero_for_every_variant():
    x, t, ctx = inputs()
    for variant in VARIANTS:
        out = make(variant, init="official")(x, t, ctx)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert torch.count_nonzero(out) == 0, variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_backward_reaches_trainable_parameters(variant):
    model = make(variant)
    counts = select_trainable(model)
    x, t, ctx = inputs(seed=2)
    out = model(x, t, ctx)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name
    assert counts.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


def _per_view_video_model(model_state, x, t, ctx):
    """The base video model ("full" variant) run on each view separately."""
    base = make("full", state={k: v for k, v in model_state.items() if ".sync." not in k and ".cross_view_attn." not in k})
    return torch.cat([base(x[:, v : v + 1], t, ctx) for v in range(x.shape[1])], dim=1)


def test_sequential_starts_as_per_view_video_model():
    pretrained = make("fused").state_dict()
    sequential = make("sequential", init="official", state=pretrained)
    assert sequential.blocks[0].cross_view_attn.o.weight.abs().sum() == 0
    x, t, ctx = inputs(seed=3)
    torch.testing.assert_close(sequential(x, t, ctx), _per_view_video_model(pretrained, x, t, ctx), rtol=1e-4, atol=1e-5)


def test_parallel_variants_at_init_and_blend_extremes():
    pretrained = make("fused").state_dict()
    blend = make("parallel_blend", state=pretrained)
    linear = make("parallel_linear", state=pretrained)
    x, t, ctx = inputs(seed=4)
    torch.testing.assert_close(linear(x, t, ctx), blend(x, t, ctx), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        for block in blend.blocks:
            block.sync.alpha.fill_(1.0)
    torch.testing.assert_close(blend(x, t, ctx), _per_view_video_model(pretrained, x, t, ctx), rtol=1e-4, atol=1e-5)


def test_rope_positions_split_and_overflow():
    assert axis_channels(128) == (44, 42, 42)
    assert sum(axis_channels(32)) == 32
    model = make("fused", rope_t_max=4)
    x, t, ctx = inputs(V=1, T=5, H=2, W=2)
    with pytest.raises(ValueError, match="t_max"):
        model(x, t, ctx)
    far = make("fused", rope_t_max=600)
    x, t, ctx = inputs(V=3, T=1, H=2, W=2)  # view 2 starts at frame position 1200
    with pytest.raises(ValueError, match="1024"):
        far(x, t, ctx)


def test_diagonal_positions_match_view_major_only_for_one_view():
    view_major = make("fused")
    diagonal = make("fused", state=view_major.state_dict(), rope_position_mode="diagonal")
    x, t, ctx = inputs(V=1)
    torch.testing.assert_close(view_major(x, t, ctx), diagonal(x, t, ctx), rtol=0, atol=0)
    x, t, ctx = inputs(V=2)
    assert (view_major(x, t, ctx) - diagonal(x, t, ctx)).abs().max() > 1e-4


def test_reference_acts_only_through_added_patch_embedding():
    """With the patch bias at zero the embedding is linear, so adding the reference's embedding at
    the reference cells equals adding the reference latents to the noisy latents there."""
    model = make("fused")
    with torch.no_grad():
        model.patch_embedding.bias.zero_()
    x, t, ctx = inputs(V=3, T=3, seed=5)
    cells = torch.stack([ReferenceCells(view=0, time=1).mask(3, 3), ReferenceCells(view=None, time=2).mask(3, 3)])
    ref = torch.randn_like(x)
    mask = cells[:, :, :, None, None, None]
    unread = torch.where(mask, ref, torch.full_like(ref, float("nan")))  # other cells must never be read
    with_ref = model(x, t, ctx, ReferenceLatents(unread, cells))
    with_ref.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with_ref = with_ref.detach()
    torch.testing.assert_close(with_ref, model(x + torch.where(mask, ref, 0.0), t, ctx), rtol=1e-5, atol=1e-5)
    assert (with_ref - model(x, t, ctx)).abs().max() > 1e-3
    zero_ref = ReferenceLatents(torch.zeros_like(x), ReferenceCells(view=1, time=None).mask(3, 3))
    torch.testing.assert_close(model(x, t, ctx, zero_ref), model(x, t, ctx), rtol=0, atol=0)
    no_cells = ReferenceLatents(ref, torch.zeros(3, 3, dtype=torch.bool))  # the path ZeRO-3 takes without a reference
    torch.testing.assert_close(model(x, t, ctx, no_cells), model(x, t, ctx), rtol=0, atol=0)
    with pytest.raises(ValueError, match="reference latents"):
        model(x, t, ctx, ReferenceLatents(ref[:, :2], cells[:, :2]))


def test_activation_checkpointing_gives_same_outputs_and_grads():
    plain = make("sequential")
    ckpt = make("sequential", state=plain.state_dict(), gradient_checkpointing=True)
    x, t, ctx = inputs(seed=6)
    outs = []
    for model in (plain, ckpt):
        out = model(x, t, ctx)
        out.square().mean().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7, msg=name)


def test_select_trainable_default_is_exactly_self_attention():
    model = make("fused")
    counts = select_trainable(model)
    chosen = {n for n, p in model.named_parameters() if p.requires_grad}
    assert chosen == {n for n, _ in model.named_parameters() if n.split(".")[2:3] == ["self_attn"]}
    assert {n.split(".", 3)[3] for n in chosen} == {f"{m}.{p}" for m in "qkvo" for p in ("weight", "bias")} | {"norm_q.weight", "norm_k.weight"}
    assert counts.trainable + counts.frozen == sum(p.numel() for p in model.parameters())
    sequential = make("sequential")
    select_trainable(sequential)
    assert sequential.blocks[1].cross_view_attn.q.weight.requires_grad
    assert not sequential.blocks[1].cross_attn.q.weight.requires_grad
    custom = select_trainable(model, patterns=("blocks.0.ffn",))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {f"blocks.0.ffn.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    assert custom.per_pattern["blocks.0.ffn"] == custom.trainable
    with pytest.raises(ValueError, match="self_atn"):
        select_trainable(model, patterns=("self_atn",))


def test_bf16_autocast_and_bf16_parameters_stay_close_to_fp32():
    model = make("fused")
    x, t, ctx = inputs(seed=7)
    expected = model(x, t, ctx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = model(x, t, ctx)
    bf16 = model.to(torch.bfloat16)(x, t, ctx)
    for out in (auto, bf16):
        assert out.dtype == torch.float32
        assert (out - expected).norm() / expected.norm() < 0.05


def test_bad_inputs_raise_clear_errors():
    model = make("fused")
    x, t, ctx = inputs(H=2, W=2)
    with pytest.raises(ValueError, match="latents"):
        model(x[:, :, :, :8], t, ctx)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        model(torch.randn(2, 2, 3, 16, 3, 2), t, ctx)
    with pytest.raises(ValueError, match="timestep"):
        model(x, t[:1], ctx)
    with pytest.raises(ValueError, match="text_len"):
        model(x, t, torch.randn(2, 9, 32))
    assert model(x, t, torch.zeros(2, 0, 32)).shape == x.shape
