"""PSNR / SSIM / LPIPS image metrics (fourd.metrics); random-backbone LPIPS is refused as a number."""
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from fourd.metrics import UnreportableMetricError, is_reportable, lpips, psnr, ssim


def _pair(seed=0, size=24, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, size, size, generator=g)
    return (target + noise * torch.randn(target.shape, generator=g)).clamp(0, 1), target


def test_psnr_of_a_known_mse():
    target = torch.zeros(3, 3, 8, 8)
    pred = torch.stack([torch.full((3, 8, 8), v) for v in (0.1, 0.01, 0.5)])
    torch.testing.assert_close(psnr(pred, target), torch.tensor([20.0, 40.0, 10 * math.log10(4.0)]))
    assert psnr(target, target).isinf().all()


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. with scipy's Gaussian filter (sigma 1.5, truncate 3.5 -> 11 taps), borders cropped."""
    c1, c2 = 0.01**2, 0.03**2

    def f(a):
        return gaussian_filter(a, sigma=1.5, truncate=3.5)

    values = []
    for xc, yc in zip(x, y):
        mx, my = f(xc), f(yc)
        vx, vy, cxy = f(xc * xc) - mx**2, f(yc * yc) - my**2, f(xc * yc) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(s[5:-5, 5:-5].mean())
    return float(np.mean(values))


def test_ssim_matches_an_independent_reference():
    pred, target = _pair(size=32)
    ours = ssim(pred, target)
    for b in range(2):
        expected = _ssim_reference(pred[b].double().numpy(), target[b].double().numpy())
        assert abs(ours[b].item() - expected) < 1e-6


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    _, target = _pair()
    torch.testing.assert_close(ssim(target, target), torch.ones(2))
    scores = [ssim(_pair(noise=n)[0], target).mean().item() for n in (0.02, 0.1, 0.3)]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim(target[..., :8, :8], target[..., :8, :8])


def test_lpips_metric_per_image():
    torch.manual_seed(0)
    pred, target = _pair(size=32)
    same = lpips(target, target, net="alex", random_backbone=True).as_subclass(torch.Tensor)
    assert same.shape == (2,) and torch.all(same == 0)
    different = lpips(pred, target, net="alex", random_backbone=True).as_subclass(torch.Tensor)
    assert torch.all(different > 0)
    single = lpips(pred[:1], target[:1], net="alex", random_backbone=True).as_subclass(torch.Tensor)
    torch.testing.assert_close(single, different[:1])


def test_random_backbone_lpips_cannot_become_a_reported_number():
    pred, target = _pair(size=32)
    values = lpips(pred, target, net="alex", random_backbone=True)
    assert not is_reportable(values)
    dataset_mean = torch.stack([values, values]).mean()  # the flag survives aggregation
    assert not is_reportable(dataset_mean)
    for to_number in (float, lambda v: v.item(), lambda v: v.tolist(), lambda v: v.numpy()):
        with pytest.raises(UnreportableMetricError, match="RANDOM backbone"):
            to_number(dataset_mean)


def test_lpips_with_a_backbone_file_is_reportable(tmp_path):
    """A backbone read from a file (here random numbers in the torchvision layout) gives plain values
    equal to the lpips package's own forward with the same backbone."""
    import lpips as lpips_package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's "pretrained is deprecated"
        reference = lpips_package.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False).eval()
    g = torch.Generator().manual_seed(5)
    features = {f"features.{k.split('.', 1)[1]}": torch.randn(v.shape, generator=g) * 0.1 for k, v in reference.net.state_dict().items()}
    reference.net.load_state_dict({k: features[f"features.{k.split('.', 1)[1]}"] for k in reference.net.state_dict()})
    path = tmp_path / "alexnet_features.pth"
    torch.save(features, path)
    pred, target = _pair(size=32)
    values = lpips(pred, target, net="alex", weights=str(path))
    assert is_reportable(values) and type(values) is torch.Tensor
    with torch.no_grad():
        expected = reference(pred, target, normalize=True).flatten()
    torch.testing.assert_close(values, expected)
