"""Building blocks of the reconstructor: the DINOv2 patch embedding and the 2D RoPE."""
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from recon.model.patch_embed import DinoPatchEmbed
from recon.model.rope2d import RoPE2D, apply_rope, token_positions


def test_pos_embed_is_resized_bicubically_with_antialias_for_other_sizes():
    torch.manual_seed(0)
    embed = DinoPatchEmbed(img_size=56, patch_size=14, embed_dim=8, depth=1, num_heads=2)
    assert embed.interpolate_pos_embed(4, 4) is embed.pos_embed
    grid = embed.pos_embed[:, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)

    def resized(**kw):
        return F.interpolate(grid, size=(2, 6), mode=kw.pop("mode", "bicubic"), **kw).permute(0, 2, 3, 1).reshape(1, 12, 8)

    table = embed.interpolate_pos_embed(2, 6)  # rows down-sampled, columns up-sampled
    assert torch.equal(table[:, :1], embed.pos_embed[:, :1])
    torch.testing.assert_close(table[:, 1:], resized(antialias=True))
    assert not torch.allclose(table[:, 1:], resized(antialias=False), atol=1e-4)
    assert not torch.allclose(table[:, 1:], resized(mode="bilinear", antialias=True), atol=1e-4)
    with torch.no_grad():
        assert embed(torch.rand(3, 3, 28, 84)).shape == (3, 12, 8)


def test_patch_embed_matches_timms_dinov2_with_registers():
    """timm's DINOv2-reg ViT adds no position to prefix tokens, so fold the cls position into its cls token."""
    torch.manual_seed(1)
    ours = DinoPatchEmbed(img_size=42, patch_size=14, embed_dim=16, depth=2, num_heads=2).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref = VisionTransformer(
        img_size=42, patch_size=14, embed_dim=16, depth=2, num_heads=2, init_values=1.0, reg_tokens=4, no_embed_class=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), dynamic_img_size=True, num_classes=0,
    ).eval()
    state = {k: v for k, v in ours.state_dict().items() if k.startswith(("patch_embed.", "blocks.", "norm."))}
    state.update(pos_embed=ours.pos_embed[:, 1:], cls_token=ours.cls_token + ours.pos_embed[:, :1], reg_token=ours.register_tokens)
    ref.load_state_dict(state)
    for size in ((42, 42), (28, 56)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref.forward_features(x)[:, 5:])


def test_rope_tables_follow_the_vggt_frequencies():
    rope = RoPE2D(head_dim=64, base=100.0)
    pos = token_positions(2, 3, num_special=5)
    assert pos.shape == (11, 2) and pos[:5].eq(0).all() and pos[5].tolist() == [1, 1] and pos[-1].tolist() == [2, 3]
    cos, sin = rope.tables(torch.tensor([[1, 0], [0, 2]]), torch.float32)
    inv_freq = 100.0 ** (-torch.arange(16) / 16)
    torch.testing.assert_close(cos[0, :32], torch.cat([inv_freq, inv_freq]).cos())  # y = 1 rotates the first half
    torch.testing.assert_close(cos[0, 32:], torch.ones(32))
    torch.testing.assert_close(sin[1, 32:], torch.cat([2 * inv_freq, 2 * inv_freq]).sin())  # x = 2, second half
    torch.testing.assert_close(sin[1, :32], torch.zeros(32))


def test_rope_scores_depend_only_on_relative_positions():
    rope = RoPE2D(head_dim=16)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 1, 2, 16, generator=g), torch.randn(1, 1, 2, 16, generator=g)
    pos = torch.tensor([[3, 1], [1, 4]])

    def score(shift):
        tables = rope.tables(pos + torch.tensor(shift), torch.float32)
        return (apply_rope(q, *tables)[0, 0, 0] * apply_rope(k, *tables)[0, 0, 1]).sum()

    torch.testing.assert_close(score([0, 0]), score([5, 2]))
    assert not torch.allclose(score([0, 0]), (q[0, 0, 0] * k[0, 0, 1]).sum())
