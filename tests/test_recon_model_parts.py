"""Building blocks of the reconstructor: DINOv2 positional-embedding resizing and the 2D RoPE."""
import torch
import torch.nn.functional as F

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
