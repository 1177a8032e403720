"""The DiT against an independent functional rendering of Wan2.1's forward pass.

The reference below follows the official WanModel step by step in its own style (complex-number
RoPE from a 1024-row table in float64, concatenated [cos, sin] timestep features, einsum
unpatchify) and works on one plain video ``[B, C, F, H, W]`` straight from the state dict.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from video4d.model import load_dit


def _rope_table(dim: int) -> torch.Tensor:
    inv = 1.0 / torch.pow(10000.0, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.outer(torch.arange(1024, dtype=torch.float64), inv)
    return torch.polar(torch.ones_like(angles), angles)


def wan_reference(sd: dict, cfg, video: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Wan2.1 T2V forward: video ``[B, C, F, H, W]``, t ``[B]``, context ``[B, L, text_dim]`` -> ``[B, C, F, H, W]``."""
    d, n, eps = cfg.dim, cfg.num_heads, cfg.eps
    hd = d // n

    def lin(name, x):
        return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])

    def ln(x, name=None):
        w, b = (sd[f"{name}.weight"], sd[f"{name}.bias"]) if name else (None, None)
        return F.layer_norm(x, (d,), w, b, eps)

    def rms(x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * sd[f"{name}.weight"]

    x = F.conv3d(video, sd["patch_embedding.weight"], sd["patch_embedding.bias"], stride=(1, 2, 2))
    B, _, f, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    L = f * h * w

    c = hd // 2
    table = torch.cat([_rope_table(hd - 4 * (hd // 6)), _rope_table(2 * (hd // 6)), _rope_table(2 * (hd // 6))], dim=1)
    tf, th, tw = table.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    freqs = torch.cat(
        [tf[:f].view(f, 1, 1, -1).expand(f, h, w, -1), th[:h].view(1, h, 1, -1).expand(f, h, w, -1), tw[:w].view(1, 1, w, -1).expand(f, h, w, -1)],
        dim=-1,
    ).reshape(L, 1, -1)

    def rope(q):
        qc = torch.view_as_complex(q.double().reshape(B, L, n, -1, 2))
        return torch.view_as_real(qc * freqs).flatten(3).float()

    half = cfg.freq_dim // 2
    sinus = torch.outer(t.double(), torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) / half))
    e = lin("time_embedding.2", F.silu(lin("time_embedding.0", torch.cat([sinus.cos(), sinus.sin()], 1).float())))
    e0 = lin("time_projection.1", F.silu(e)).unflatten(1, (6, d))
    ctx = F.pad(context, (0, 0, 0, cfg.text_len - context.shape[1]))
    ctx = lin("text_embedding.2", F.gelu(lin("text_embedding.0", ctx), approximate="tanh"))

    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        m = (sd[p + "modulation"] + e0).chunk(6, dim=1)
        y = ln(x) * (1 + m[1]) + m[0]
        q = rope(rms(lin(p + "self_attn.q", y), p + "self_attn.norm_q").view(B, L, n, hd))
        k = rope(rms(lin(p + "self_attn.k", y), p + "self_attn.norm_k").view(B, L, n, hd))
        v = lin(p + "self_attn.v", y).view(B, L, n, hd)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        x = x + lin(p + "self_attn.o", a.flatten(2)) * m[2]
        y = ln(x, p + "norm3")
        q = rms(lin(p + "cross_attn.q", y), p + "cross_attn.norm_q").view(B, L, n, hd)
        k = rms(lin(p + "cross_attn.k", ctx), p + "cross_attn.norm_k").view(B, -1, n, hd)
        v = lin(p + "cross_attn.v", ctx).view(B, -1, n, hd)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        x = x + lin(p + "cross_attn.o", a.flatten(2))
        y = ln(x) * (1 + m[4]) + m[3]
        x = x + lin(p + "ffn.2", F.gelu(lin(p + "ffn.0", y), approximate="tanh")) * m[5]

    hm = (sd["head.modulation"] + e[:, None]).chunk(2, dim=1)
    out = lin("head.head", ln(x) * (1 + hm[1]) + hm[0])
    out = out.view(B, f, h, w, 1, 2, 2, -1)
    return torch.einsum("bfhwpqrc->bcfphqwr", out).reshape(B, -1, f, h * 2, w * 2)


def _inputs(B=2, V=1, T=3, H=4, W=6, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, T, 16, H, W, generator=g), torch.tensor([730.0, 120.5])[:B], torch.randn(B, L, 32, generator=g)


def test_single_view_matches_wan_reference_for_fused_and_full():
    torch.manual_seed(0)
    base = load_dit("tiny", init="random")
    state = base.state_dict()
    latents, t, ctx = _inputs()
    expected = wan_reference(state, base.config, latents[:, 0].transpose(1, 2), t, ctx)
    for variant in ("fused", "full"):
        model = load_dit({"preset": "tiny", "attention_variant": variant}, state)
        out = model(latents, t, ctx)[:, 0].transpose(1, 2)
        assert expected.abs().mean() > 0.1
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_full_variant_equals_wan_on_views_concatenated_in_time():
    """ReCamMaster equivalence: with rope_t_max = T, the 'full' variant on V views of T frames is the
    video model on one V*T-frame video (view-major tokens, frame positions v*T + t)."""
    torch.manual_seed(1)
    V, T = 2, 3
    model = load_dit({"preset": "tiny", "attention_variant": "full", "rope_t_max": T}, init="random")
    latents, t, ctx = _inputs(V=V, T=T, seed=1)
    out = model(latents, t, ctx)
    video = latents.flatten(1, 2).transpose(1, 2)
    expected = wan_reference(model.state_dict(), model.config, video, t, ctx)
    torch.testing.assert_close(out.flatten(1, 2).transpose(1, 2), expected, rtol=1e-4, atol=1e-5)


def test_paper_reference_tokens_are_patch_embeddings_of_noised_plus_clean():
    """Paper §3.1: "adding the patch embeddings of the reference frames to the noised latent tokens".
    Through the training loss, the first block's input at a reference cell is PE(x_sigma) + PE(x0)
    (the same Conv3d, bias included in both) and PE(x_sigma) elsewhere (default reference_mode)."""
    from video4d.flow import build_reference, flow_matching_loss
    from video4d.grid import ReferenceCells

    torch.manual_seed(2)
    model = load_dit("tiny", init="random")
    assert model.config.reference_mode == "paper"
    g = torch.Generator().manual_seed(3)
    B, V, T, h, w = 2, 2, 3, 4, 4
    x0, noise = torch.randn(B, V, T, 16, h, w, generator=g), torch.randn(B, V, T, 16, h, w, generator=g)
    sigma = torch.tensor([0.35, 0.9])
    reference = build_reference(x0, [ReferenceCells(0, 0), ReferenceCells(None, 2)])
    seen = {}
    model.blocks[0].register_forward_pre_hook(lambda mod, args: seen.update(x=args[0].detach()))
    flow_matching_loss(model, x0, torch.randn(B, 3, 32, generator=g), reference, noise=noise, sigma=sigma)

    def pe(lat):  # [B, V, T, C, h, w] -> tokens [B, V, T, h/2, w/2, dim]
        frames = lat.flatten(0, 2)
        out = F.conv2d(frames, model.patch_embedding.weight[:, :, 0], model.patch_embedding.bias, stride=2)
        return out.unflatten(0, (B, V, T)).permute(0, 1, 2, 4, 5, 3)

    s = sigma.view(B, 1, 1, 1, 1, 1)
    x_sigma = (1 - s) * x0 + s * noise
    cells = reference.cell_mask()[:, :, :, None, None, None]
    expected = torch.where(cells, pe(x_sigma) + pe(x0), pe(x_sigma))
    torch.testing.assert_close(seen["x"], expected.reshape(B, -1, model.config.dim), rtol=1e-5, atol=1e-5)
