"""FVD family: Fréchet distance against closed forms and scipy, the cells of every FVD variant
against hand-written lists, the I3D network's key layout and forward, reportability flags."""
import numpy as np
import pytest
import scipy.linalg
import torch

from eval.fvd import VARIANTS, frechet_distance, fvd_family, gaussian_stats, grid_videos, video_cells
from eval.i3d import I3DConfig, InceptionI3d, _same_pad, load_i3d
from fourd.metrics import UnreportableMetricError, is_reportable
from fourd.weights import WeightsNotFoundError
from tests.reference_tables import state_rows

KEY_TABLE = "tests/data/i3d_inception_keys.tsv"


def _random_spd(d, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    a, b = torch.rand(5, generator=g, dtype=torch.float64) + 0.1, torch.rand(5, generator=g, dtype=torch.float64) + 0.1
    expected = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    torch.testing.assert_close(frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)), expected)


def test_frechet_distance_identical_and_shifted_full_covariances():
    sigma = _random_spd(6, 1)
    mu = torch.arange(6, dtype=torch.float64)
    assert abs(frechet_distance(mu, sigma, mu, sigma).item()) < 1e-8
    shift = torch.tensor([1.0, -2.0, 0, 0, 0.5, 0], dtype=torch.float64)
    torch.testing.assert_close(frechet_distance(mu, sigma, mu + shift, sigma), (shift**2).sum())


def test_frechet_distance_matches_the_scipy_sqrtm_formula():
    s1, s2 = _random_spd(7, 2), _random_spd(7, 3)
    mu1, mu2 = torch.zeros(7, dtype=torch.float64), torch.ones(7, dtype=torch.float64)
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = 7.0 + np.trace(s1.numpy()) + np.trace(s2.numpy()) - 2 * np.trace(covmean)
    assert abs(frechet_distance(mu1, s1, mu2, s2).item() - expected) < 1e-8 * abs(expected)
    with pytest.raises(ValueError, match="mu \\[D\\] and sigma \\[D, D\\]"):
        frechet_distance(mu1, s1, mu2[:3], s2)


def test_gaussian_stats_match_numpy_and_need_two_samples():
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(4))
    mu, sigma = gaussian_stats(x)
    np.testing.assert_allclose(mu.numpy(), x.double().numpy().mean(0))
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.double().numpy(), rowvar=False))
    with pytest.raises(ValueError, match="at least two videos"):
        gaussian_stats(x[:1])


def test_video_cells_of_each_variant_on_a_3x4_grid():
    assert video_cells("FVD-F", 3, 4) == [[(0, 0), (0, 1), (0, 2), (0, 3)], [(1, 0), (1, 1), (1, 2), (1, 3)],
                                          [(2, 0), (2, 1), (2, 2), (2, 3)]]
    assert video_cells("FVD-V", 3, 4) == [[(0, 0), (1, 0), (2, 0)], [(0, 1), (1, 1), (2, 1)],
                                          [(0, 2), (1, 2), (2, 2)], [(0, 3), (1, 3), (2, 3)]]
    assert video_cells("FVD-Diag", 3, 4) == [[(0, 0), (1, 1), (2, 2)]]
    assert video_cells("FV4D", 3, 4) == [[(0, 0), (0, 1), (0, 2), (0, 3), (1, 3), (1, 2), (1, 1), (1, 0),
                                          (2, 0), (2, 1), (2, 2), (2, 3)]]
    with pytest.raises(ValueError, match="unknown FVD variant"):
        video_cells("FVD-X", 3, 4)


def test_grid_videos_gather_the_listed_cells():
    B, V, T = 2, 3, 4
    code = torch.tensor([[[100 * b + 10 * v + t for t in range(T)] for v in range(V)] for b in range(B)], dtype=torch.float32)
    grids = code[..., None, None, None].expand(B, V, T, 3, 2, 2)
    for variant in VARIANTS:
        videos = grid_videos(grids, variant)
        cells = video_cells(variant, V, T)
        expected = torch.tensor([[100 * b + 10 * v + t for v, t in video] for b in range(B) for video in cells], dtype=torch.float32)
        torch.testing.assert_close(videos[:, :, 0, 0, 0], expected)
        assert videos.shape[2:] == (3, 2, 2)


class _MomentFeatures:
    """A tiny independent feature net: per-video channel means and standard deviations [N, 6]."""

    def __init__(self, weights_loaded):
        self.weights_loaded = weights_loaded

    def __call__(self, videos):
        return torch.cat([videos.mean((1, 3, 4)), videos.std((1, 3, 4))], 1)


def test_fvd_family_values_and_reportability():
    g = torch.Generator().manual_seed(5)
    gt = torch.rand(3, 2, 3, 3, 8, 8, generator=g)
    pred = (gt + 0.2 * torch.rand(gt.shape, generator=g)).clamp(0, 1)
    net = _MomentFeatures(weights_loaded=True)
    scores = fvd_family(pred, gt, net)
    assert set(scores) == set(VARIANTS) and all(is_reportable(v) for v in scores.values())
    for variant in VARIANTS:
        a = net(grid_videos(pred, variant)).double().numpy()
        b = net(grid_videos(gt, variant)).double().numpy()
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
        assert abs(float(scores[variant]) - expected) < 1e-6 * max(1.0, abs(expected))
    same = fvd_family(gt, gt, net)
    assert all(abs(float(v)) < 1e-8 for v in same.values())
    unflagged = fvd_family(pred, gt, _MomentFeatures(weights_loaded=False), variants=("FVD-F",))
    assert not is_reportable(unflagged["FVD-F"])
    with pytest.raises(UnreportableMetricError):
        float(unflagged["FVD-F"])


def test_i3d_keys_match_the_piergiaj_layout():
    rows = [line.rstrip("\n").split("\t") for line in open(KEY_TABLE) if not line.startswith("#")]
    reference = {k: tuple(int(s) for s in shape.split(",")) for k, shape in rows}
    ours = {k: s for k, s in state_rows(load_i3d(device="meta")) if not k.endswith("num_batches_tracked")}
    assert ours == reference


def test_tf_same_padding_gives_ceil_output_sizes():
    for size in (5, 7, 8, 224):
        for kernel, stride in ((7, 2), (3, 1), (3, 2), (2, 2), (1, 1)):
            padded = _same_pad(torch.zeros(1, 1, size, 1, 1), (kernel, 1, 1), (stride, 1, 1))
            out = (padded.shape[2] - kernel) // stride + 1
            assert out == -(-size // stride), (size, kernel, stride)


@pytest.fixture(scope="module")
def tiny_i3d():
    torch.manual_seed(0)
    return InceptionI3d(I3DConfig(resolution=32)).eval()


def test_i3d_forward_on_a_tiny_input_and_loading_from_a_file(tiny_i3d, tmp_path):
    model = tiny_i3d
    videos = torch.rand(2, 4, 3, 20, 20)
    with torch.no_grad():
        logits = model(videos)
    assert logits.shape == (2, 400) and torch.isfinite(logits).all() and not model.weights_loaded
    # a DataParallel-style file without num_batches_tracked (as rgb_imagenet.pt) loads and reproduces the model
    state = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(state, path)
    loaded = load_i3d(I3DConfig(resolution=32), weights=str(path))
    assert loaded.weights_loaded
    with torch.no_grad():
        torch.testing.assert_close(loaded(videos), logits)
    pool = load_i3d(I3DConfig(resolution=32, features="pool"), weights=str(path))
    with torch.no_grad():
        assert pool(videos).shape == (2, 1024)
    with pytest.raises(WeightsNotFoundError, match="missing_i3d.pt"):
        load_i3d(weights=str(tmp_path / "missing_i3d.pt"))
    with pytest.raises(WeightsNotFoundError, match="rgb_imagenet.pt"):
        load_i3d()


def test_fvd_family_runs_with_the_i3d_network(tiny_i3d):
    net = tiny_i3d
    g = torch.Generator().manual_seed(6)
    grids = torch.rand(2, 2, 3, 3, 16, 16, generator=g)
    scores = fvd_family(grids, grids.flip(0).clone(), net)
    assert not any(is_reportable(v) for v in scores.values())
    values = [v.as_subclass(torch.Tensor) for v in scores.values()]
    assert all(torch.isfinite(v) and v >= -1e-6 for v in values)
