"""4D behaviour of the reconstructor (tiny presets): zero-init temporal layers, camera token
replacement, Gaussian head outputs, gradients, chunking/checkpointing, input checks."""
import dataclasses

import pytest
import torch

from recon.geometry import unproject_depth
from recon.model import Reconstructor, build_reconstructor, load_weights, resolve_config

V, T, HW = 2, 3, 28


def _images(seed: int = 0, size=(HW, HW)) -> torch.Tensor:
    return torch.rand(1, V, T, 3, *size, generator=torch.Generator().manual_seed(seed))


def _with_positive_fov(model: Reconstructor) -> Reconstructor:
    """Random tiny camera heads can predict fov 0 (ReLU) -> infinite focal; bias the fov outputs up."""
    with torch.no_grad():
        model.camera_head.pose_branch.fc2.bias[7:] += 2.0
    return model


def _tiny_pair(**overrides):
    torch.manual_seed(0)
    static = _with_positive_fov(build_reconstructor("tiny")).eval()
    four_d = build_reconstructor({"preset": "tiny-4d", **overrides}).eval()
    load_weights(four_d, static.state_dict())
    return static, four_d


def test_zero_initialised_temporal_layers_are_an_exact_identity():
    _, four_d = _tiny_pair(camera_token_replacement=False)
    x = _images()
    with torch.no_grad():
        with_temporal = four_d.aggregator(x, range(4))
        four_d.aggregator.temporal = False
        without = four_d.aggregator(x, range(4))
    assert all(torch.equal(with_temporal[i], without[i]) for i in range(4))


def test_tiny_4d_at_init_equals_the_static_model_per_timestep():
    static, four_d = _tiny_pair(camera_token_replacement=False)
    x = _images()
    with torch.no_grad():
        out = four_d(x)
        for t in range(T):
            ref = static(x[:, :, t : t + 1])
            for name in ("depth", "depth_conf"):
                assert torch.equal(getattr(out, name)[:, :, t : t + 1], getattr(ref, name)), name
            for name in ("pose_enc", "extrinsics", "intrinsics"):  # camera head batches B*T sets: GEMM rounding only
                torch.testing.assert_close(getattr(out, name)[:, :, t : t + 1], getattr(ref, name), rtol=1e-5, atol=1e-6)


def test_camera_token_replacement_shares_cameras_across_time():
    _, replaced = _tiny_pair(camera_token_replacement=True)
    _, independent = _tiny_pair(camera_token_replacement=False)
    x = _images(1)
    with torch.no_grad():
        shared, separate = replaced(x), independent(x)
    for name in ("extrinsics", "intrinsics"):
        cams = getattr(shared, name)
        assert all(torch.equal(cams[:, :, t], cams[:, :, 0]) for t in range(T)), name
    assert not torch.allclose(separate.extrinsics[:, :, 1], separate.extrinsics[:, :, 0], atol=1e-4)
    torch.testing.assert_close(shared.extrinsics[:, :, 0], separate.extrinsics[:, :, 0])
    torch.testing.assert_close(shared.depth, separate.depth)


def test_gaussians_are_valid_and_start_at_the_unprojected_depth():
    torch.manual_seed(2)
    model = _with_positive_fov(build_reconstructor("tiny-4d")).eval()
    x = _images(2)
    with torch.no_grad():
        out = model(x)
    g, N = out.gaussians, V * HW * HW
    assert g.means.shape == (1, T, N, 3) and g.quats.shape == (1, T, N, 4) and g.colors.shape == (1, T, N, 3)
    assert g.scales.shape == (1, T, N, 3) and g.opacities.shape == (1, T, N)
    points = unproject_depth(out.depth, out.extrinsics, out.intrinsics)  # [1, V, T, H, W, 3]
    torch.testing.assert_close(g.means, points.transpose(1, 2).reshape(1, T, N, 3))
    torch.testing.assert_close(g.colors, x.transpose(1, 2).permute(0, 1, 2, 4, 5, 3).reshape(1, T, N, 3))
    assert 0.05 < g.opacities.min() and g.opacities.max() < 0.2
    footprint = (out.depth / (out.intrinsics[..., 0, 0] * out.intrinsics[..., 1, 1]).sqrt()[..., None, None]).transpose(1, 2).reshape(1, T, N, 1)
    assert torch.all((g.scales / footprint > 0.3) & (g.scales / footprint < 0.8))

    with torch.no_grad():  # arbitrary head outputs must still give valid Gaussians
        last = model.gaussian_head.scratch.output_conv2[-1]
        last.weight.normal_(0, 3.0)
        last.bias.normal_(0, 3.0)
        g = model(x).gaussians
    torch.testing.assert_close(g.quats.norm(dim=-1), torch.ones(1, T, N))
    assert torch.all(g.scales > 0) and torch.all((g.opacities > 0) & (g.opacities < 1))
    assert torch.isfinite(g.means).all()


def test_forward_backward_reaches_temporal_layers_and_gaussian_head():
    torch.manual_seed(3)
    model = _with_positive_fov(build_reconstructor({"preset": "tiny-4d", "camera_token_replacement": False}))
    out = model(_images(3))
    g = out.gaussians
    loss = g.means.square().mean() + g.colors.mean() + g.opacities.mean() + g.scales.mean() + out.depth.mean()
    loss.backward()
    agg = model.aggregator
    for block in (agg.frame_temporal_blocks[0], agg.global_temporal_blocks[-1]):
        assert block.attn.proj.weight.grad.abs().sum() > 0
        assert block.mlp.fc2.weight.grad.abs().sum() > 0
    head = model.gaussian_head
    assert head.scratch.output_conv2[-1].weight.grad.abs().sum() > 0
    assert head.projects[0].weight.grad.abs().sum() > 0


def test_chunking_and_checkpointing_do_not_change_results():
    torch.manual_seed(4)
    base = build_reconstructor("tiny-4d")
    cfg = dataclasses.replace(resolve_config("tiny-4d"), head_chunk_size=1, patch_embed_chunk_size=1, gradient_checkpointing=True)
    chunked = Reconstructor(cfg)
    chunked.load_state_dict(base.state_dict())
    x = _images(4)
    a, b = base(x), chunked(x)
    torch.testing.assert_close(a.depth, b.depth)
    torch.testing.assert_close(a.gaussians.means, b.gaussians.means)
    a.depth.mean().backward()
    b.depth.mean().backward()
    w = "aggregator.frame_blocks.0.attn.qkv.weight"
    torch.testing.assert_close(dict(base.named_parameters())[w].grad, dict(chunked.named_parameters())[w].grad)


def test_non_square_input_and_bad_inputs():
    torch.manual_seed(5)
    model = build_reconstructor("tiny-4d").eval()
    with torch.no_grad():
        out = model(_images(5, size=(42, 28)))
    assert out.depth.shape == (1, V, T, 42, 28) and out.gaussians.means.shape == (1, T, V * 42 * 28, 3)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(_images(5, size=(30, 28)))
    with pytest.raises(ValueError, match=r"\[B, V, T, 3, H, W\]"):
        model(torch.rand(1, V, 3, HW, HW))


def test_runs_in_bfloat16():
    torch.manual_seed(6)
    model = build_reconstructor("tiny-4d").to(torch.bfloat16).eval()
    with torch.no_grad():
        out = model(_images(6))
    assert out.depth.dtype == torch.bfloat16 and torch.isfinite(out.gaussians.means).all()


def test_heads_run_in_fp32_under_bf16_autocast_like_official_vggt():
    """Official VGGT disables autocast around its heads: under bf16 autocast only the backbone is
    bf16; cameras, depth and Gaussians come out fp32 and close to the fp32 run."""
    torch.manual_seed(7)
    model = build_reconstructor("tiny-4d").eval()
    images = _images(7)
    with torch.no_grad():
        ref = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(images)
    for name in ("pose_enc", "extrinsics", "intrinsics", "depth", "depth_conf"):
        got, want = getattr(out, name), getattr(ref, name)
        assert got.dtype == torch.float32, name
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)
    assert out.gaussians.means.dtype == torch.float32


@pytest.mark.parametrize("detach", [False, True])
def test_detach_depth_decides_whether_the_centres_carry_gradient_into_depth(detach):
    """``gaussian.detach_depth`` (Splatt3r's detached points): the centres' gradient reaches the depth
    map only without it; centres are the same either way."""
    torch.manual_seed(3)
    head = build_reconstructor({"preset": "tiny-4d", "gaussian": {"detach_depth": detach}}).gaussian_head
    depth = (1 + torch.rand(2, HW, HW)).requires_grad_()
    ext = torch.cat([torch.eye(3), torch.zeros(3, 1)], -1).expand(2, 3, 4)
    K = torch.tensor([[30.0, 0, HW / 2], [0, 30.0, HW / 2], [0, 0, 1]]).expand(2, 3, 3)
    raw = torch.randn(2, 14, HW, HW, requires_grad=True)
    g = head.to_gaussians(raw, torch.rand(2, 3, HW, HW), depth, ext, K)
    (grad,) = torch.autograd.grad(g.means.square().sum(), depth, allow_unused=True)
    assert (grad is None) == detach
    torch.testing.assert_close(g.means[..., 2].detach(), depth.detach() * (1 + 0.05 * raw[:, 2].detach()))
