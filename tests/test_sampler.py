"""Euler sampler: seeding, reference cells, classifier-free guidance, and the analytic-velocity toy."""
import pytest
import torch

from video4d.flow import shift_sigma
from video4d.grid import ReferenceCells, ReferenceLatents
from video4d.sampler import sample, sampling_sigmas
from video4d.text_context import empty_context, load_context, pad_contexts, save_context


class _ContextVelocity(torch.nn.Module):
    """A random, non-linear stand-in velocity model that reads latents, timestep and context."""

    def __init__(self, C=4, text_dim=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.mix = torch.nn.Linear(C, C)
        self.text = torch.nn.Linear(text_dim, C)
        self.calls = 0

    def forward(self, x, timestep, context, reference):
        self.calls += 1
        h = x.movedim(3, -1)
        h = torch.tanh(self.mix(h)) + self.text(context.mean(1))[:, None, None, None, None, :] * (timestep[:, None, None, None, None, None] / 1000)
        return h.movedim(-1, 3)


SHAPE = (2, 3, 4, 4, 2, 2)


def test_sampling_sigmas_run_from_one_to_zero_on_the_shifted_schedule():
    s = sampling_sigmas(10, shift=3.0)
    assert s.shape == (11,) and s[0] == 1 and s[-1] == 0
    torch.testing.assert_close(s, shift_sigma(torch.linspace(1, 0, 11, dtype=torch.float64), 3.0))
    with pytest.raises(ValueError, match="steps"):
        sampling_sigmas(0)


def test_same_seed_same_output_different_seed_different_output():
    model, ctx = _ContextVelocity(), torch.randn(2, 5, 8)
    a = sample(model, SHAPE, ctx, steps=4, seed=7)
    b = sample(model, SHAPE, ctx, steps=4, seed=7)
    c = sample(model, SHAPE, ctx, steps=4, seed=8)
    assert a.shape == SHAPE and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.allclose(a, c)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    assert torch.equal(sample(model, noise, ctx, steps=4), a)


def test_euler_steps_match_a_hand_written_loop():
    model, ctx = _ContextVelocity(), torch.randn(2, 5, 8)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    x = noise.clone()
    sig = [float(s) for s in shift_sigma(torch.linspace(1, 0, 4, dtype=torch.float64), 5.0)]
    for i in range(3):
        x = x + (sig[i + 1] - sig[i]) * model(x, torch.full((2,), sig[i] * 1000), ctx, None)
    torch.testing.assert_close(sample(model, noise, ctx, steps=3, shift=5.0), x)


def test_guidance_one_equals_no_cfg_and_guidance_combines_branches():
    model, ctx, neg = _ContextVelocity(), torch.randn(2, 5, 8), torch.randn(1, 3, 8)
    plain = sample(model, SHAPE, ctx, steps=3, seed=0)
    model.calls = 0
    with_neg = sample(model, SHAPE, ctx, steps=3, seed=0, guidance=1.0, negative_context=neg)
    assert torch.equal(plain, with_neg) and model.calls == 3

    def guided(neg_ctx, g):
        def fn(x, t, c, r):
            v_u = model(x, t, neg_ctx.expand(x.shape[0], -1, -1), r)
            return v_u + g * (model(x, t, c, r) - v_u)

        return fn

    model.calls = 0
    cfg = sample(model, SHAPE, ctx, steps=3, seed=0, guidance=4.0, negative_context=neg)
    assert model.calls == 6
    torch.testing.assert_close(cfg, sample(guided(neg, 4.0), SHAPE, ctx, steps=3, seed=0))
    zeros_default = sample(model, SHAPE, ctx, steps=3, seed=0, guidance=4.0)
    torch.testing.assert_close(zeros_default, sample(guided(torch.zeros(1, 5, 8), 4.0), SHAPE, ctx, steps=3, seed=0))
    assert not torch.allclose(cfg, plain)


@pytest.mark.parametrize("mode", ["paper", "replace"])
def test_reference_cells_follow_the_training_input_at_every_step_and_are_exact_in_the_output(mode):
    model, ctx = _ContextVelocity(), torch.randn(2, 5, 8)
    ref_lat = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    cells = torch.stack([ReferenceCells(0, 0).mask(3, 4), ReferenceCells(None, 2).mask(3, 4)])
    reference = ReferenceLatents(latents=ref_lat, cells=cells)
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    seen = []

    def spy(x, t, c, r):
        assert r is reference
        seen.append((x[cells].clone(), float(t[0]) / 1000))
        return model(x, t, c, r)

    out = sample(spy, start, ctx, reference=reference, steps=4, guidance=2.0, reference_mode=mode)
    assert len(seen) == 8
    sig = [float(s) for s in shift_sigma(torch.linspace(1, 0, 5, dtype=torch.float64), 5.0)]
    for i, (x_ref, sigma) in enumerate(seen):
        assert sigma == pytest.approx(sig[i // 2], abs=1e-6)
        # paper: the forward-process value (1 - sigma) x0 + sigma eps with the cells' starting noise
        expected = (1 - sigma) * ref_lat[cells] + sigma * start[cells] if mode == "paper" else ref_lat[cells]
        torch.testing.assert_close(x_ref, expected, rtol=0, atol=1e-6)
    assert torch.equal(out[cells], ref_lat[cells])


def test_reference_mode_defaults_to_the_models_config():
    from types import SimpleNamespace

    ref_lat = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    reference = ReferenceLatents(latents=ref_lat, cells=ReferenceCells(0, 0).mask(3, 4))
    first = {}

    class Spy(_ContextVelocity):
        def forward(self, x, timestep, context, r):
            first.setdefault(self.config.reference_mode, x[r.cell_mask()].clone())
            return super().forward(x, timestep, context, r)

    for mode in ("paper", "replace"):
        spy = Spy()
        spy.config = SimpleNamespace(reference_mode=mode)
        sample(spy, SHAPE, torch.randn(2, 5, 8), reference=reference, steps=2)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))  # seed 0's starting noise
    assert torch.equal(first["replace"], ref_lat[reference.cell_mask()])
    assert torch.equal(first["paper"], noise[reference.cell_mask()])  # sigma = 1: pure noise
    with pytest.raises(ValueError, match="reference_mode"):
        sample(_ContextVelocity(), SHAPE, torch.randn(2, 5, 8), reference=reference, steps=2, reference_mode="clean")


def test_default_step_count_is_the_papers_40():
    model = _ContextVelocity()
    sample(model, SHAPE, torch.randn(2, 5, 8))
    assert model.calls == 40


def _mixture_velocity(weights, means, std):
    """Exact rectified-flow velocity E[eps - x0 | x_sigma] for a 1-D Gaussian mixture target."""
    w, mu = torch.tensor(weights, dtype=torch.float64), torch.tensor(means, dtype=torch.float64)

    def fn(x, timestep, context, reference):
        s = (timestep / 1000).double().reshape(-1, *[1] * (x.dim() - 1))[..., None]
        xs = x.double()[..., None]
        a = 1 - s
        var = a**2 * std**2 + s**2
        logp = torch.log(w) - 0.5 * (xs - a * mu) ** 2 / var - 0.5 * torch.log(var)
        post = torch.softmax(logp, dim=-1)
        resid = (xs - a * mu) / var
        e_x0 = mu + a * std**2 * resid
        e_eps = s * resid
        return (post * (e_eps - e_x0)).sum(-1).float()

    return fn


def test_analytic_optimal_velocity_samples_the_target_mixture():
    fn = _mixture_velocity([0.25, 0.75], [-1.5, 1.0], 0.2)
    out = sample(fn, (1, 1, 1, 1, 100, 100), torch.zeros(1, 1, 1), steps=60, shift=3.0, seed=0).flatten()
    left = out < -0.25
    assert abs(float(left.float().mean()) - 0.25) < 0.02
    assert abs(float(out[left].mean()) + 1.5) < 0.03 and abs(float(out[~left].mean()) - 1.0) < 0.03
    assert abs(float(out[left].std()) - 0.2) < 0.03 and abs(float(out[~left].std()) - 0.2) < 0.03


def test_text_context_round_trip_and_errors(tmp_path):
    ctx = torch.randn(7, 16)
    url = str(tmp_path / "prompt.safetensors")
    save_context(url, ctx)
    assert torch.equal(load_context(url, text_dim=16), ctx)
    with pytest.raises(ValueError, match="text_dim=32"):
        load_context(url, text_dim=32)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_context(str(tmp_path / "missing.safetensors"))
    from fourd.weights import write_safetensors

    write_safetensors(str(tmp_path / "other.safetensors"), {"emb": ctx})
    with pytest.raises(KeyError, match="no key 'context'"):
        load_context(str(tmp_path / "other.safetensors"))
    save_context("memory://ctx/p.safetensors", ctx)
    assert torch.equal(load_context("memory://ctx/p.safetensors"), ctx)
    padded = pad_contexts([ctx, ctx[:3]], 10)
    assert padded.shape == (2, 10, 16) and torch.equal(padded[1, :3], ctx[:3]) and not padded[1, 3:].any()
    assert not empty_context(2, 4, 16).any() and empty_context(2, 4, 16).shape == (2, 4, 16)


def test_real_tiny_dit_keeps_reference_cells_exact_and_is_seeded():
    from video4d import load_dit

    torch.manual_seed(0)
    model = load_dit("tiny", init="random").eval()
    shape = (1, 3, 3, model.config.in_dim, 4, 4)
    ctx = torch.randn(1, 5, model.config.text_dim)
    ref_lat = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    reference = ReferenceLatents(latents=ref_lat, cells=ReferenceCells(view=2, time=0).mask(3, 3))
    cells = reference.cell_mask()
    out = sample(model, shape, ctx, reference=reference, steps=3, guidance=3.0, seed=2)
    again = sample(model, shape, ctx, reference=reference, steps=3, guidance=3.0, seed=2)
    assert torch.equal(out[cells], ref_lat[cells]) and torch.equal(out, again)
    free = sample(model, shape, ctx, steps=3, guidance=3.0, seed=2)
    assert not torch.allclose(out[~cells], free[~cells])  # attention carries the references to the other cells
