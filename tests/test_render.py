"""The pure-PyTorch Gaussian rasterizer: gradients, an analytic image, ordering, background, culling."""
import pytest
import torch

from recon.render import project_gaussians, render_gaussians, select_backend


def _K(f, cx, cy, dtype=torch.float64):
    return torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def _look_from(eye, dtype=torch.float64):
    """World-to-camera [4, 4] for a camera at ``eye`` looking at the origin (OpenCV axes)."""
    eye = torch.tensor(eye, dtype=dtype)
    forward = -eye / eye.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0], dtype=dtype))
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])
    view = torch.eye(4, dtype=dtype)
    view[:3, :3] = R
    view[:3, 3] = -R @ eye
    return view


def _identity_quats(n, dtype=torch.float64):
    q = torch.zeros(n, 4, dtype=dtype)
    q[:, 0] = 1.0
    return q


def test_gradcheck_all_parameters_two_cameras():
    torch.manual_seed(0)
    means = torch.tensor([[0.05, -0.02, 0.0], [-0.1, 0.08, 0.3], [0.02, 0.1, -0.2]], dtype=torch.float64)
    quats = torch.randn(3, 4, dtype=torch.float64)
    scales = torch.tensor([[1.0, 0.8, 0.9], [0.9, 1.2, 0.8], [0.8, 0.9, 1.1]], dtype=torch.float64)
    opacities = torch.tensor([0.6, 0.5, 0.7], dtype=torch.float64)
    colors = torch.rand(3, 3, dtype=torch.float64)
    viewmats = torch.stack([_look_from([0.0, 0.0, -3.0]), _look_from([1.0, -0.5, -2.8])])
    Ks = torch.stack([_K(8.0, 3.1, 2.7), _K(9.0, 2.9, 2.3)])
    backgrounds = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.5, 1.0]], dtype=torch.float64)
    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors)]

    def fn(m, q, s, o, c):
        return render_gaussians(m, q, s, o, c, viewmats, Ks, 6, 5, backgrounds=backgrounds, backend="torch")

    with torch.no_grad():
        _, alphas, _ = fn(*inputs)
    assert alphas.min() > 0.05, "every pixel must be covered so that no threshold is crossed"
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("eye", [[0.0, 0.0, -4.0], [2.0, -1.0, -3.0]])
def test_single_isotropic_gaussian_matches_closed_form(eye):
    """On the optical axis: alpha = o exp(-0.5 r² / (σ_px² + eps2d)), σ_px = f s / z, centres at +0.5."""
    f, s, opacity, eps2d = 20.0, 0.3, 0.8, 0.3
    W, H, cx, cy = 24, 20, 11.3, 9.6
    viewmat = _look_from(eye)
    z = float(torch.tensor(eye, dtype=torch.float64).norm())
    color = torch.tensor([[0.2, 0.7, 0.4]], dtype=torch.float64)
    out_c, out_a, out_d = render_gaussians(
        torch.zeros(1, 3, dtype=torch.float64), _identity_quats(1), torch.full((1, 3), s, dtype=torch.float64),
        torch.tensor([opacity], dtype=torch.float64), color, viewmat[None], _K(f, cx, cy)[None], W, H, eps2d=eps2d,
        backend="torch",
    )
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    r2 = (xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2
    expected = opacity * torch.exp(-0.5 * r2 / ((f * s / z) ** 2 + eps2d))
    alpha = out_a[0, ..., 0]
    visible = expected > 1.01 / 255
    assert visible.sum() > 50 and (~visible).sum() > 50
    torch.testing.assert_close(alpha[visible], expected[visible], rtol=1e-9, atol=1e-12)
    assert torch.all(alpha[expected < 0.99 / 255] == 0)
    torch.testing.assert_close(out_c[0], alpha[..., None] * color[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out_d[0, ..., 0][visible], torch.full_like(alpha[visible], z), rtol=1e-9, atol=1e-9)


def _two_gaussians(order):
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 4.0]])  # red near, blue far
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    opacities = torch.tensor([0.999, 0.9])
    scales = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
    idx = torch.tensor(order)
    return means[idx], _identity_quats(2, torch.float32), scales[idx], opacities[idx], colors[idx]


def test_near_opaque_gaussian_hides_far_one_regardless_of_input_order():
    cams = dict(viewmats=torch.eye(4)[None], Ks=_K(16.0, 8.5, 8.5, torch.float32)[None], width=16, height=16)
    outs = [render_gaussians(*_two_gaussians(order), **cams, backend="torch") for order in ([0, 1], [1, 0])]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
    color, alpha, depth = outs[0]
    centre = color[0, 8, 8]
    assert centre[0] > 0.99 and centre[2] < 2e-3
    assert abs(depth[0, 8, 8, 0].item() - 2.0) < 0.01


def test_compositing_follows_the_over_operator():
    means, quats, scales, opacities, colors = _two_gaussians([0, 1])
    opacities = torch.tensor([0.5, 0.7])
    kw = dict(viewmats=torch.eye(4)[None], Ks=_K(16.0, 7.5, 7.5, torch.float32)[None], width=16, height=16)
    color, alpha, depth = render_gaussians(means, quats, scales, opacities, colors, **kw, backend="torch")
    # both Gaussians are centred on pixel (7, 7): their alphas there are exactly the opacities
    a1, a2 = 0.5, 0.7
    torch.testing.assert_close(color[0, 7, 7], a1 * colors[0] + (1 - a1) * a2 * colors[1])
    torch.testing.assert_close(alpha[0, 7, 7, 0], torch.tensor(1 - (1 - a1) * (1 - a2)))
    expected_depth = (a1 * 2.0 + (1 - a1) * a2 * 4.0) / (1 - (1 - a1) * (1 - a2))
    torch.testing.assert_close(depth[0, 7, 7, 0], torch.tensor(expected_depth))


def test_background_shows_where_nothing_is_rendered():
    means = torch.tensor([[0.0, 0.0, 5.0]])
    bg = torch.tensor([[0.25, 0.5, 0.75]])
    color, alpha, depth = render_gaussians(
        means, _identity_quats(1, torch.float32), torch.full((1, 3), 0.05), torch.tensor([0.9]), torch.ones(1, 3),
        torch.eye(4)[None], _K(20.0, 16.0, 16.0, torch.float32)[None], 32, 32, backgrounds=bg, backend="torch",
    )
    empty = alpha[0, ..., 0] == 0
    assert empty.sum() > 900 and (~empty).sum() > 0
    assert torch.all(color[0][empty] == bg[0])
    assert torch.all(depth[0][empty] == 0)
    covered = alpha[0, 16, 16, 0]
    torch.testing.assert_close(color[0, 16, 16], covered * torch.ones(3) + (1 - covered) * bg[0])


def test_gaussians_behind_the_camera_or_near_plane_contribute_nothing():
    visible = torch.tensor([[0.1, 0.0, 3.0]])
    hidden = torch.tensor([[0.0, 0.0, -2.0], [0.0, 0.0, 0.005], [0.0, 0.0, 0.0]])
    means = torch.cat([visible, hidden]).requires_grad_(True)
    n = means.shape[0]
    params = [_identity_quats(n, torch.float32), torch.full((n, 3), 0.5), torch.full((n,), 0.9), torch.rand(n, 3)]
    kw = dict(viewmats=torch.eye(4)[None], Ks=_K(16.0, 8.0, 8.0, torch.float32)[None], width=16, height=16, backend="torch")
    out_all = render_gaussians(means, *params, **kw)
    out_visible = render_gaussians(visible, *[p[:1] for p in params], **kw)
    for a, b in zip(out_all, out_visible):
        torch.testing.assert_close(a, b)
    sum(o.sum() for o in out_all).backward()
    assert torch.isfinite(means.grad).all()
    assert torch.all(means.grad[1:] == 0) and means.grad[0].abs().sum() > 0


def test_far_off_and_non_finite_splats_get_empty_pixel_boxes():
    """Untrained models can emit splats 1e19 px away or with a non-finite 2D covariance: their pixel
    boxes must be empty (not an integer overflow that crashes the pairing)."""
    from recon.render.torch_rasterizer import _box_pairs

    means2d = torch.tensor([[5.0, 5.0], [1e19, -1e19], [3.0, 3.0], [float("nan"), 2.0]])
    cov2d = torch.eye(2).repeat(4, 1, 1)
    cov2d[2, 0, 0] = -1.0  # a broken covariance (sqrt of a negative variance is NaN)
    opacities = torch.full((4,), 0.9)
    gid, pix = _box_pairs(means2d, cov2d, opacities, 16, 16)
    gid_ok, pix_ok = _box_pairs(means2d[:1], cov2d[:1], opacities[:1], 16, 16)
    assert torch.equal(gid, gid_ok) and torch.equal(pix, pix_ok) and gid.numel() > 0


def test_batched_call_equals_per_item_calls():
    torch.manual_seed(1)
    B, N = 2, 30
    args = (
        torch.randn(B, N, 3) * 0.3 + torch.tensor([0.0, 0.0, 3.0]), torch.randn(B, N, 4), torch.rand(B, N, 3) * 0.1 + 0.02,
        torch.rand(B, N), torch.rand(B, N, 3), torch.eye(4).expand(B, 2, 4, 4).clone(),
        torch.stack([_K(12.0, 6.0, 6.0, torch.float32)] * 2).expand(B, 2, 3, 3).clone(),
    )
    batched = render_gaussians(*args, 12, 12, backend="torch")
    for b in range(B):
        single = render_gaussians(*[a[b] for a in args], 12, 12, backend="torch")
        for x, y in zip(batched, single):
            torch.testing.assert_close(x[b], y)


def test_fitting_colours_and_means_reduces_the_photometric_loss():
    torch.manual_seed(2)
    N = 40
    truth = torch.randn(N, 3) * 0.4 + torch.tensor([0.0, 0.0, 3.0])
    common = (_identity_quats(N, torch.float32), torch.full((N, 3), 0.12), torch.full((N,), 0.8))
    cams = (torch.eye(4)[None], _K(20.0, 10.0, 10.0, torch.float32)[None], 20, 20)
    target, _, _ = render_gaussians(truth, *common, torch.rand(N, 3), *cams, backend="torch")
    means = (truth + 0.05 * torch.randn(N, 3)).requires_grad_(True)
    colors = torch.full((N, 3), 0.5, requires_grad=True)
    opt = torch.optim.Adam([means, colors], lr=0.02)
    losses = []
    for _ in range(25):
        image, _, _ = render_gaussians(means, *common, colors, *cams, backend="torch")
        loss = (image - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_backend_selection():
    assert select_backend(torch.device("cpu"), torch.float32, "auto") == "torch"
    assert select_backend(torch.device("cpu"), torch.float32, "torch") == "torch"
    with pytest.raises(RuntimeError, match="gsplat"):
        select_backend(torch.device("cpu"), torch.float32, "gsplat")
    with pytest.raises(ValueError, match="unknown render backend"):
        select_backend(torch.device("cpu"), torch.float32, "cuda")


def _sequential_reference(means, quats, scales, opacities, colors, viewmat, K, W, H):
    """gsplat's per-pixel loop, written densely: Gaussians in depth order, 1/255 skip, 1e-4 stop."""
    ids, means2d, cov2d, depths = project_gaussians(means, quats, scales, viewmat, K, W, H)
    conic = torch.linalg.inv(cov2d)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=means.dtype), torch.arange(W, dtype=means.dtype), indexing="ij")
    centres = torch.stack([xs, ys], -1).reshape(-1, 2) + 0.5
    T = torch.ones(H * W, dtype=means.dtype)
    done = torch.zeros(H * W, dtype=torch.bool)
    color = torch.zeros(H * W, colors.shape[1], dtype=means.dtype)
    for i in torch.argsort(depths).tolist():
        d = means2d[i] - centres
        sigma = 0.5 * torch.einsum("pi,ij,pj->p", d, conic[i], d)
        alpha = torch.clamp(opacities[ids[i]] * torch.exp(-sigma), max=0.999)
        use = (alpha >= 1 / 255) & ~done
        next_T = T * (1 - alpha)
        done = done | (use & (next_T <= 1e-4))
        use = use & ~done
        color = color + torch.where(use[:, None], (alpha * T)[:, None] * colors[ids[i]], 0.0)
        T = torch.where(use, next_T, T)
    return color.reshape(H, W, -1), (1 - T).reshape(H, W, 1), int(done.sum())


def test_matches_a_sequential_per_pixel_reference_with_early_stop():
    torch.manual_seed(4)
    N, W, H = 150, 20, 16
    means = torch.randn(N, 3, dtype=torch.float64) * 0.5
    quats = torch.randn(N, 4, dtype=torch.float64)
    scales = torch.rand(N, 3, dtype=torch.float64) * 0.3 + 0.1
    opacities = torch.rand(N, dtype=torch.float64) * 0.3 + 0.69
    colors = torch.rand(N, 3, dtype=torch.float64)
    viewmat, K = _look_from([0.3, -0.2, -3.5]), _K(18.0, 10.2, 7.9)
    color, alpha, _ = render_gaussians(means, quats, scales, opacities, colors, viewmat[None], K[None], W, H, backend="torch")
    ref_color, ref_alpha, stopped = _sequential_reference(means, quats, scales, opacities, colors, viewmat, K, W, H)
    assert stopped > 20 and (ref_alpha < 0.5).any(), "the scene must stop some pixels early and leave others thin"
    torch.testing.assert_close(color[0], ref_color, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(alpha[0], ref_alpha, rtol=1e-9, atol=1e-10)
