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
    sigma = sample_training_sigma(20000, TimestepSampling("logit_normal", mean=mean, std=1.0, shift=1.0), g)
    assert sigma.shape == (20000,) and bool((sigma > 0).all()) and bool((sigma < 1).all())
    assert abs(float(sigma.median()) - 1 / (1 + math.exp(-mean))) < 0.01
    shifted = sample_training_sigma(20000, TimestepSampling("logit_normal", mean=0.0, std=1.0, shift=3.0), torch.Generator().manual_seed(1))
    assert abs(float(shifted.median()) - 0.75) < 0.01  # shift(0.5) = 3 * 0.5 / (1 + 2 * 0.5)
    uniform = sample_training_sigma(20000, TimestepSampling("uniform", shift=1.0), g)
    assert abs(float(uniform.mean()) - 0.5) < 0.01 and abs(float(uniform.median()) - 0.5) < 0.015
    with pytest.raises(ValueError, match="timestep sampling mode"):
        sample_training_sigma(4, TimestepSampling("cosine"), g)


def _grid(B=2, V=3, T=4, C=2, h=2, w=2, seed=0):
    return torch.randn(B, V, T, C, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["paper", "replace"])
def test_loss_ignores_predictions_at_reference_cells_and_feeds_them_per_mode(mode):
    x0, noise = _grid(), _grid(seed=1)
    sigma = torch.tensor([0.3, 0.8])
    cells = [ReferenceCells(view=0, time=1), ReferenceCells(view=None, time=2)]
    reference = build_reference(x0, cells)
    ref = reference.cell_mask()
    assert ref.shape == (2, 3, 4) and int(ref[0].sum()) == 4 + 3 - 1 and int(ref[1].sum()) == 3
    base = _grid(seed=2)
    seen = {}
    plain = TimestepSampling(weighting="none")

    def model(offset):
        def fn(x, timestep, context, r):
            seen["x"], seen["t"], seen["r"] = x, timestep, r
            return base + offset

        return fn

    loss, stats = flow_matching_loss(model(0.0), x0, None, reference, noise=noise, sigma=sigma, sampling=plain, reference_mode=mode)
    # paper: noised latents at every cell (the reference enters as the DiT's added patch embedding
    # of seen["r"]); replace: the clean latents at reference cells
    x_sigma = (1 - sigma.view(2, 1, 1, 1, 1, 1)) * x0 + sigma.view(2, 1, 1, 1, 1, 1) * noise
    expected_input = x_sigma if mode == "paper" else torch.where(ref[..., None, None, None], x0, x_sigma)
    torch.testing.assert_close(seen["x"], expected_input, rtol=0, atol=1e-6)
    assert seen["r"] is reference and torch.equal(seen["r"].latents, x0)
    torch.testing.assert_close(seen["t"], torch.tensor([300.0, 800.0]))
    target_cells = ~ref
    manual = (base - (noise - x0))[target_cells].pow(2).mean()
    torch.testing.assert_close(loss, manual)
    assert abs(float(stats["target_fraction"]) - float(target_cells.float().mean())) < 1e-6

    at_ref = torch.where(ref[..., None, None, None], torch.full_like(base, 7.0), torch.zeros_like(base))
    loss_ref_changed, _ = flow_matching_loss(model(at_ref), x0, None, reference, noise=noise, sigma=sigma, sampling=plain, reference_mode=mode)
    assert torch.equal(loss_ref_changed, loss)
    at_target = torch.where(ref[..., None, None, None], torch.zeros_like(base), torch.full_like(base, 7.0))
    loss_target_changed, _ = flow_matching_loss(model(at_target), x0, None, reference, noise=noise, sigma=sigma, sampling=plain, reference_mode=mode)
    assert float(loss_target_changed) > float(loss) + 1.0
    with pytest.raises(ValueError, match="reference mode"):
        flow_matching_loss(model(0.0), x0, None, reference, noise=noise, sigma=sigma, reference_mode="clean")


def test_default_timesteps_and_bell_weights_follow_diffsynth_wan_training():
    """Defaults: uniform level, shift 5, DiffSynth-Studio's bell weight; re-implemented here on its
    discrete 1000-level schedule (``timesteps = 1000 * shift(linspace(1, 0, 1001)[:-1])``,
    ``y = exp(-2 ((t - 500) / 1000)^2)``, ``w = (y - min y) * 1000 / sum(y - min y)``)."""
    from video4d.flow import loss_weight

    default = TimestepSampling()
    assert (default.mode, default.shift, default.weighting) == ("uniform", 5.0, "bell")
    u = torch.linspace(1.0, 0.0, 1001, dtype=torch.float64)[:-1]
    timesteps = 1000 * (5 * u / (1 + 4 * u))
    y = torch.exp(-2 * ((timesteps - 500) / 1000) ** 2)
    w = (y - y.min()) * (1000 / (y - y.min()).sum())
    torch.testing.assert_close(loss_weight(timesteps / 1000, default).double(), w, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(loss_weight(torch.tensor([0.3]), TimestepSampling(weighting="none")), torch.ones(1))
    # the loss weights each sample by its level: one sample at sigma=0.5 (peak) and one at 0.97
    x0, noise, sigma = _grid(), _grid(seed=1), torch.tensor([0.5, 0.97])
    loss, _ = flow_matching_loss(lambda x, t, c, r: torch.zeros_like(x), x0, None, None, noise=noise, sigma=sigma)
    err = (noise - x0).pow(2).mean(dim=(1, 2, 3, 4, 5))
    torch.testing.assert_close(loss, (err * loss_weight(sigma, default)).mean())
    g = torch.Generator().manual_seed(0)
    drawn = sample_training_sigma(20000, default, g)
    assert abs(float(drawn.median()) - 5 * 0.5 / (1 + 4 * 0.5)) < 0.01  # shift(U) has median shift(1/2)
    with pytest.raises(ValueError, match="loss weighting"):
        TimestepSampling(weighting="snr")


def test_reference_choice_frequencies_and_static_samples_lose_the_column():
    from video4d.flow import ReferenceChoice

    choice = ReferenceChoice(both=0.5, row=0.2, column=0.2, none=0.1, view=1, time=2)
    cells = choice.draw(20000, torch.Generator().manual_seed(0))
    counts = {}
    for c in cells:
        key = ("row" if c.view == 1 else "-") + ("col" if c.time == 2 else "-")
        counts[key] = counts.get(key, 0) + 1
    for key, p in (("rowcol", 0.5), ("row-", 0.2), ("-col", 0.2), ("--", 0.1)):
        assert abs(counts[key] / 20000 - p) < 0.012, (key, counts)
    again = choice.draw(50, torch.Generator().manual_seed(0))
    assert again == cells[:50]  # seeded
    assert all(c == ReferenceCells(0, 0) for c in ReferenceChoice().draw(20, torch.Generator().manual_seed(0)))
    x0 = _grid(B=4)
    drawn = [ReferenceCells(0, 0), ReferenceCells(0, None), ReferenceCells(None, 0), ReferenceCells(0, 0)]
    static = torch.tensor([False, False, False, True])
    mask = build_reference(x0, drawn, static=static, static_drop="time").cell_mask()
    assert torch.equal(mask[3], ReferenceCells(0, None).mask(3, 4))  # static: freeze-time column removed
    assert torch.equal(mask[0], ReferenceCells(0, 0).mask(3, 4)) and torch.equal(mask[2], ReferenceCells(None, 0).mask(3, 4))
    with pytest.raises(ValueError, match="sum to 1"):
        ReferenceChoice(both=0.5, row=0.2)


def test_loss_without_reference_is_plain_mse_and_seeded():
    x0 = _grid()

    def model(x, timestep, context, r):
        return x * 0.5

    plain = TimestepSampling(shift=1.0, weighting="none")
    a, _ = flow_matching_loss(model, x0, None, None, torch.Generator().manual_seed(3), plain)
    b, _ = flow_matching_loss(model, x0, None, None, torch.Generator().manual_seed(3), plain)
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


def test_build_reference_always_leaves_a_target_cell():
    """Freeze-time grids (T = 1) and single videos (V = 1): a reference covering the whole grid is
    reduced, so every drawn case trains (the first 300 steps of the tiny 4D recipe had 15 % steps
    with loss exactly 0 before)."""
    freeze_time = _grid(B=4, V=3, T=1)
    cases = [ReferenceCells(0, 0), ReferenceCells(0, None), ReferenceCells(None, 0), ReferenceCells(None, None)]
    reference = build_reference(freeze_time, cases)
    mask = reference.cell_mask()
    assert torch.equal(mask[0], ReferenceCells(0, None).mask(3, 1)) and torch.equal(mask[1], mask[0])
    assert int(mask[2:].sum()) == 0
    assert bool((~mask).flatten(1).any(1).all())
    model = lambda x, t, c, r: torch.zeros_like(x)  # noqa: E731
    loss, stats = flow_matching_loss(model, freeze_time, None, build_reference(freeze_time, [ReferenceCells(0, 0)] * 4), torch.Generator().manual_seed(1))
    assert float(loss) > 0 and float(stats["target_fraction"]) == pytest.approx(2 / 3)
    assert build_reference(_grid(B=2, V=1, T=4), ReferenceCells(0, None)) is None
    single = build_reference(_grid(B=1, V=1, T=4), ReferenceCells(0, 2)).cell_mask()
    assert torch.equal(single[0], ReferenceCells(None, 2).mask(1, 4))
    untouched = build_reference(_grid(B=1), ReferenceCells(0, 0)).cell_mask()
    assert torch.equal(untouched[0], ReferenceCells(0, 0).mask(3, 4))


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
        loss, _ = flow_matching_loss(model, data(256), None, None, g, TimestepSampling("logit_normal", shift=1.0, weighting="none"))
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


def test_gaussian_baseline_velocity_is_the_least_squares_predictor_for_gaussian_latents():
    from eval.flow_eval import gaussian_velocity

    mean, var = torch.tensor([0.5, -1.0]), torch.tensor([0.25, 2.0])
    x = torch.randn(1, 1, 1, 2, 3, 3)
    torch.testing.assert_close(gaussian_velocity(x, torch.ones(1), mean, var), x - mean.view(1, 1, 1, 2, 1, 1))  # sigma 1: x = eps
    per_position = gaussian_velocity(x, torch.full((1,), 0.3), mean[:, None, None].expand(2, 3, 3), var[:, None, None].expand(2, 3, 3))
    torch.testing.assert_close(per_position, gaussian_velocity(x, torch.full((1,), 0.3), mean, var))
    torch.testing.assert_close(gaussian_velocity(x, torch.zeros(1), mean, var), -x)  # sigma 0: x = x0
    g = torch.Generator().manual_seed(0)
    n, sigma = 200000, 0.4
    x0 = mean.view(1, 2) + var.sqrt().view(1, 2) * torch.randn(n, 2, generator=g)
    eps = torch.randn(n, 2, generator=g)
    xs = (1 - sigma) * x0 + sigma * eps
    for c in range(2):  # the exact E[eps - x0 | x] is affine in x: compare with a least-squares fit
        design = torch.stack([xs[:, c], torch.ones(n)], 1)
        coef = torch.linalg.lstsq(design, (eps - x0)[:, c:c + 1]).solution[:, 0]
        probe = torch.tensor([-1.0, 0.0, 2.0])
        grid = torch.zeros(3, 1, 1, 2, 1, 1)
        grid[:, 0, 0, c, 0, 0] = probe
        got = gaussian_velocity(grid, torch.full((3,), sigma), mean, var)[:, 0, 0, c, 0, 0]
        torch.testing.assert_close(got, coef[0] * probe + coef[1], rtol=0, atol=0.02)


@pytest.mark.parametrize("extra, named", [(["--levels", "0.5", "1.5"], "--levels [1.5]"), (["--levels", "0"], "--levels [0.0]"),
                                          (["--psnr-count", "-1"], "--psnr-count -1"), (["--count", "0"], "--count 0")])
def test_flow_eval_refuses_impossible_numbers_before_loading_a_model(tmp_path, capsys, extra, named):
    from eval.flow_eval import main

    missing = str(tmp_path / "absent.safetensors")  # never opened: the check comes first
    with pytest.raises(SystemExit):
        main(["grid", "--dit", missing, "--vae", missing, "--json", str(tmp_path / "out.json"), *extra])
    err = capsys.readouterr().err
    assert named in err and "absent" not in err
