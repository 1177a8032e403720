"""Wan2.1 VAE: official key layout, shapes, chunked == one-shot causal passes, causality, per-view independence."""
import pytest
import torch

from tests.reference_tables import key_shape_sha256, read_table, state_rows
from video4d.vae import VAE_CONFIGS, VAEConfig, WanVAE, load_vae

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    vae = load_vae("tiny")
    with torch.no_grad():  # move norms and biases off their init so every path matters
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vae


def test_state_dict_matches_official_table():
    header, rows = read_table("wan2.1-vae")
    with torch.device("meta"):
        vae = WanVAE(VAE_CONFIGS["wan2.1-vae"])
    state = vae.state_dict()
    ref = dict(rows)
    assert set(state) == set(ref)
    assert {k: tuple(v.shape) for k, v in state.items()} == ref
    assert list(state) == [key for key, _ in rows]
    assert key_shape_sha256(state_rows(vae)) == header["key_shape_sha256"]
    assert sum(p.numel() for p in vae.parameters()) == header["total_params"]
    ctor = header["ctor"]
    cfg = VAE_CONFIGS["wan2.1-vae"]
    assert (cfg.dim, cfg.z_dim, list(cfg.dim_mult), cfg.num_res_blocks) == (ctor["dim"], ctor["z_dim"], ctor["dim_mult"], ctor["num_res_blocks"])
    assert list(cfg.temporal_downsample) == ctor["temperal_downsample"]


@pytest.mark.parametrize("T", [1, 5, 9])
def test_encode_decode_shapes(tiny, T):
    frames = torch.rand(1, 2, T, 3, 8, 24)
    with torch.no_grad():
        z = tiny.encode(frames)
        out = tiny.decode(z)
    assert z.shape == (1, 2, (T - 1) // 4 + 1, 16, 1, 3)
    assert out.shape == frames.shape
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("T", [2, 4, 6])
def test_frame_count_must_be_4k_plus_1(tiny, T):
    with pytest.raises(ValueError, match="4k\\+1"):
        tiny.encode(torch.rand(1, 1, T, 3, 16, 16))


def test_spatial_size_and_layout_errors(tiny):
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny.encode(torch.rand(1, 1, 5, 3, 16, 12))
    with pytest.raises(ValueError, match=r"\[B, V, T, 3, H, W\]"):
        tiny.encode(torch.rand(1, 5, 3, 16, 16))
    with pytest.raises(ValueError, match="latents"):
        tiny.decode(torch.rand(1, 1, 2, 8, 2, 2))
    with pytest.raises(ValueError, match="chunk_frames"):
        tiny.encode(torch.rand(1, 1, 5, 3, 16, 16), chunk_frames=3)


def test_chunked_encode_equals_one_shot(tiny):
    frames = torch.rand(1, 1, 9, 3, 16, 16)
    with torch.no_grad():
        one_shot = tiny.encode(frames, chunk_frames=None)
        chunked = tiny.encode(frames, chunk_frames=4)
        chunked8 = tiny.encode(frames, chunk_frames=8)
    torch.testing.assert_close(chunked, one_shot, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked8, one_shot, rtol=0, atol=1e-5)


def test_gradients_flow_across_chunks(tiny):
    frames = torch.rand(1, 1, 5, 3, 16, 16, requires_grad=True)
    (chunked,) = torch.autograd.grad(tiny.encode(frames, chunk_frames=4).square().sum(), frames)
    (one_shot,) = torch.autograd.grad(tiny.encode(frames, chunk_frames=None).square().sum(), frames)
    assert chunked[:, :, 0].abs().max() > 0
    torch.testing.assert_close(chunked, one_shot, rtol=1e-4, atol=1e-5)  # float32 sums differ by chunking (as the forward test)


def test_chunked_decode_equals_one_shot(tiny):
    z = torch.randn(1, 2, 4, 16, 2, 2)
    with torch.no_grad():
        one_shot = tiny.decode(z, chunk_latents=None)
        per_frame = tiny.decode(z, chunk_latents=1)
        pairs = tiny.decode(z, chunk_latents=2, max_videos=1)
    torch.testing.assert_close(per_frame, one_shot, rtol=0, atol=1e-5)
    torch.testing.assert_close(pairs, one_shot, rtol=0, atol=1e-5)


def test_encoder_is_causal(tiny):
    frames = torch.rand(1, 1, 9, 3, 16, 16)
    changed = frames.clone()
    changed[:, :, 6] = torch.rand_like(changed[:, :, 6])  # frame 6 belongs to latent frame 2 (frames 5..8)
    with torch.no_grad():
        a, b = tiny.encode(frames), tiny.encode(changed)
    torch.testing.assert_close(a[:, :, :2], b[:, :, :2], rtol=0, atol=0)
    assert (a[:, :, 2] - b[:, :, 2]).abs().max() > 1e-4


def test_decoder_is_causal(tiny):
    z = torch.randn(1, 1, 3, 16, 2, 2)
    changed = z.clone()
    changed[:, :, 1] += 1.0  # latent frame 1 decodes to frames 1..4
    with torch.no_grad():
        a, b = tiny.decode(z), tiny.decode(changed)
    torch.testing.assert_close(a[:, :, :1], b[:, :, :1], rtol=0, atol=0)
    assert (a[:, :, 1:5] - b[:, :, 1:5]).abs().max() > 1e-4


def test_views_are_independent_causal_videos(tiny):
    frames = torch.rand(1, 2, 5, 3, 16, 16)
    changed = frames.clone()
    changed[:, 1] = torch.rand_like(changed[:, 1])
    with torch.no_grad():
        a, b = tiny.encode(frames), tiny.encode(changed)
        alone = tiny.encode(frames[:, :1])
        da, db = tiny.decode(a), tiny.decode(b)
    torch.testing.assert_close(a[:, 0], b[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(alone[:, 0], a[:, 0], rtol=0, atol=1e-5)
    assert (a[:, 1] - b[:, 1]).abs().max() > 1e-4
    torch.testing.assert_close(da[:, 0], db[:, 0], rtol=0, atol=1e-6)


def test_latent_normalisation_uses_config_statistics(tiny):
    mean = tuple(float(i) / 4 for i in range(16))
    std = tuple(1.0 + i / 8 for i in range(16))
    cfg = VAEConfig(dim=8, latents_mean=mean, latents_std=std)
    vae = WanVAE(cfg)
    vae.load_state_dict(tiny.state_dict())
    frames = torch.rand(1, 1, 5, 3, 16, 16)
    z = torch.randn(1, 1, 2, 16, 2, 2)
    m, s = torch.tensor(mean).view(1, 1, 1, 16, 1, 1), torch.tensor(std).view(1, 1, 1, 16, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(frames), (tiny.encode(frames) - m) / s)
        torch.testing.assert_close(vae.decode(z), tiny.decode(z * s + m))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="unknown VAE preset"):
        load_vae("wan9-vae")
    with pytest.raises(ValueError, match="temporal_downsample"):
        VAEConfig(temporal_downsample=(True,))
    with pytest.raises(ValueError, match="z_dim"):
        VAEConfig(z_dim=4)
