"""Rectified flow: identities, timestep shift and sampling, the reference-masked loss, a trained toy."""
import math

import pytest
import torch

from video4d.flow import (
    TimestepSampling,
    apply_reference,
    build_reference,
    flow_matching_loss,
    interpolate,
    model_timestep,
    sample_training_sigma,
    shift_sigma,
    velocity_target,
)
from video4d.grid import ReferenceCells, ReferenceLatents
from video4d.sampler import sample


def test_interpolation_endpoints_and_velocity_is_the_sigma_derivative():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 2, 4, 3, 3, generator=g), torch.randn(3, 2, 2, 4, 3, 3, generator=g)
    assert torch.equal(interpolate(x0, noise, torch.zeros(3)), x0)
    assert torch.equal(interpolate(x0, noise, torch.ones(3)), noise)
    sigma = torch.tensor([0.1, 0.5, 0.9], requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda s: interpolate(x0, noise, s).sum(dim=(1, 2, 3, 4, 5)), sigma)
    torch.testing.assert_close(torch.diagonal(jac), velocity_target(x0, noise).sum(dim=(1, 2, 3, 4, 5)))
    # per-sample sigma: sample 1 sits exactly halfway between data and noise
    torch.testing.assert_close(interpolate(x0, noise, sigma.detach())[1], 0.5 * (x0[1] + noise[1]))
    torch.testing.assert_close(model_timestep(torch.tensor([0.25, 1.0])), torch.tensor([250.0, 1000.0]))


@pytest.mark.parametrize("shift", [0.5, 1.0, 3.0, 5.0])
def test_shift_fixes_endpoints_is_monotone_and_scales_the_odds(shift):
    s = torch.linspace(0, 1, 201, dtype=torch.float64)
    out = shift_sigma(s, shift)
    assert out[0] == 0 and out[-1] == 1
    assert bool((out[1:] > out[:-1]).all())
    inner = slice(1, -1)
    # the shift multiplies the noise-to-signal odds sigma / (1 - sigma) by `shift`
    torch.testing.assert_close(out[inner] / (1 - out[inner]), shift * s[inner] / (1 - s[inner]))
    if shift > 1:
        assert bool((out[inner] > s[inner]).all())


def test_shift_rejects_non_positive():
    with pytest.raises(ValueError, match="shift"):
        shift_sigma(torch.tensor([0.5]), 0.0)


def test_logit_normal_samples_lie_in_open_interval_with_sigmoid_mean_median():
    g = torch.Generator().manual_seed(1)
    mean = 0.8
    sigma = sample_training_sigma(20000, TimestepSampling("logit_normal", mean=mean, std=1.0), g)
    assert sigma.shape == (20000,) and bool((sigma > 0).all()) and bool((sigma < 1).all())
    assert abs(float(sigma.median()) - 1 / (1 + math.exp(-mean))) < 0.01
    shifted = sample_training_sigma(20000, TimestepSampling("logit_normal", mean=0.0, std=1.0, shift=3.0), torch.Generator().manual_seed(1))
    assert abs(float(shifted.median()) - 0.75) < 0.01  # shift(0.5) = 3 * 0.5 / (1 + 2 * 0.5)
    uniform = sample_training_sigma(20000, TimestepSampling("uniform"), g)
    assert abs(float(uniform.mean()) - 0.5) < 0.01 and abs(float(uniform.median()) - 0.5) < 0.015
    with pytest.raises(ValueError, match="timestep sampling mode"):
        sample_training_sigma(4, TimestepSampling("cosine"), g)


def _grid(B=2, V=3, T=4, C=2, h=2, w=2, seed=0):
    return torch.randn(B, V, T, C, h, w, generator=torch.Generator().manual_seed(seed))


def test_loss_ignores_predictions_at_reference_cells_and_feeds_them_clean():
    x0, noise = _grid(), _grid(seed=1)
    sigma = torch.tensor([0.3, 0.8])
    cells = [ReferenceCells(view=0, time=1), ReferenceCells(view=None, time=2)]
    reference = build_reference(x0, cells)
    ref = reference.cell_mask()
    assert ref.shape == (2, 3, 4) and int(ref[0].sum()) == 4 + 3 - 1 and int(ref[1].sum()) == 3
    base = _grid(seed=2)
    seen = {}

    def model(offset):
        def fn(x, timestep, context, r):
            seen["x"], seen["t"] = x, timestep
            return base + offset

        return fn

    loss, stats = flow_matching_loss(model(0.0), x0, None, reference, noise=noise, sigma=sigma)
    # the noisy input holds the clean latents at reference cells and x_sigma elsewhere
    expected_input = torch.where(ref[..., None, None, None], x0, interpolate(x0, noise, sigma))
    assert torch.equal(seen["x"], expected_input)
    torch.testing.assert_close(seen["t"], torch.tensor([300.0, 800.0]))
    target_cells = ~ref
    manual = (base - (noise - x0))[target_cells].pow(2).mean()
    torch.testing.assert_close(loss, manual)
    assert abs(float(stats["target_fraction"]) - float(target_cells.float().mean())) < 1e-6

    at_ref = torch.where(ref[..., None, None, None], torch.full_like(base, 7.0), torch.zeros_like(base))
    loss_ref_changed, _ = flow_matching_loss(model(at_ref), x0, None, reference, noise=noise, sigma=sigma)
    assert torch.equal(loss_ref_changed, loss)
    at_target = torch.where(ref[..., None, None, None], torch.zeros_like(base), torch.full_like(base, 7.0))
    loss_target_changed, _ = flow_matching_loss(model(at_target), x0, None, reference, noise=noise, sigma=sigma)
    assert float(loss_target_changed) > float(loss) + 1.0


def test_loss_without_reference_is_plain_mse_and_seeded():
    x0 = _grid()

    def model(x, timestep, context, r):
        return x * 0.5

    a, _ = flow_matching_loss(model, x0, None, None, torch.Generator().manual_seed(3))
    b, _ = flow_matching_loss(model, x0, None, None, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x0.shape, generator=g)
    sigma = torch.rand(2, generator=g)
    torch.testing.assert_close(a, (interpolate(x0, noise, sigma) * 0.5 - (noise - x0)).pow(2).mean())


def test_build_reference_static_drop_and_masks():
    x0 = _grid(B=3)
    cells = ReferenceCells(view=1, time=0)
    static = torch.tensor([False, True, False])
    all_dropped = build_reference(x0, cells, static=static).cell_mask()
    assert int(all_dropped[1].sum()) == 0 and torch.equal(all_dropped[0], cells.mask(3, 4))
    view_dropped = build_reference(x0, cells, static=static, static_drop="view").cell_mask()
    assert torch.equal(view_dropped[1], ReferenceCells(view=None, time=0).mask(3, 4))
    time_dropped = build_reference(x0, cells, static=static, static_drop="time").cell_mask()
    assert torch.equal(time_dropped[1], ReferenceCells(view=1, time=None).mask(3, 4))
    assert build_reference(x0, ReferenceCells(view=None, time=None)) is None
    from_mask = build_reference(x0, cells.mask(3, 4))
    assert from_mask.cell_mask().shape == (3, 3, 4)
    with pytest.raises(ValueError, match="ReferenceCells for a batch"):
        build_reference(x0, [cells, cells])
    with pytest.raises(ValueError, match="static_drop"):
        build_reference(x0, cells, static=static, static_drop="both")


def test_apply_reference_rejects_mismatched_grid():
    x = _grid()
    reference = ReferenceLatents(latents=_grid(V=2), cells=ReferenceCells(0, 0).mask(2, 4))
    with pytest.raises(ValueError, match="do not match the grid"):
        apply_reference(x, reference)


class _ToyVelocity(torch.nn.Module):
    """Velocity MLP for 2-D points stored as grids [B, 1, 1, 2, 1, 1]."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2))

    def forward(self, x, timestep, context, reference):
        flat = x.reshape(x.shape[0], 2)
        out = self.net(torch.cat([flat, timestep[:, None] / 1000.0], dim=1))
        return out.reshape(x.shape)


def test_trained_toy_flow_reproduces_a_two_mode_target():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def data(n):
        mode = torch.rand(n, generator=g) < 0.3
        centre = torch.where(mode, -2.0, 2.0)
        pts = torch.stack([centre, torch.zeros(n)], 1) + 0.3 * torch.randn(n, 2, generator=g)
        return pts.reshape(n, 1, 1, 2, 1, 1)

    model = _ToyVelocity()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(600):
        loss, _ = flow_matching_loss(model, data(256), None, None, g, TimestepSampling("logit_normal"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-50:]) / 50 < 0.8 * sum(losses[:50]) / 50
    out = sample(model, (2000, 1, 1, 2, 1, 1), torch.zeros(1, 1, 1), steps=30, shift=1.0, seed=1).reshape(-1, 2)
    left = out[:, 0] < 0
    assert abs(float(left.float().mean()) - 0.3) < 0.05
    assert abs(float(out[~left, 0].mean()) - 2.0) < 0.25 and abs(float(out[left, 0].mean()) + 2.0) < 0.25
    assert abs(float(out[:, 1].std()) - 0.3) < 0.15


def test_tiny_dit_loss_with_references_goes_down():
    from video4d import load_dit

    torch.manual_seed(0)
    model = load_dit("tiny", init="random")
    x0 = torch.randn(2, 2, 3, model.config.in_dim, 4, 4, generator=torch.Generator().manual_seed(0))
    reference = build_reference(x0, ReferenceCells(view=0, time=0))
    context = torch.randn(2, 4, model.config.text_dim)
    noise, sigma = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), torch.tensor([0.4, 0.9])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss, _ = flow_matching_loss(model, x0, context, reference, noise=noise, sigma=sigma)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
