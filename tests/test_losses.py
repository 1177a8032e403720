"""ReconstructionLoss (MSE + λ LPIPS): zero on identical images, gradients, backbone loading, clear errors."""
import pytest
import torch

from fourd.weights import WeightsNotFoundError
from fourd.metrics import BACKBONE_FILES, build_lpips
from recon.losses import ReconstructionLoss


def _images(seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=g), torch.rand(2, 3, size, size, generator=g)


@pytest.fixture(scope="module")
def loss_fn():
    torch.manual_seed(0)
    return ReconstructionLoss(lpips_weight=0.5, lpips_net="alex", random_backbone=True)


def test_identical_images_give_zero_loss_and_gradients_flow(loss_fn):
    a, b = _images()
    same = loss_fn(a, a.clone())
    assert same["loss"].item() == 0.0 and same["lpips"].item() == 0.0
    pred = a.clone().requires_grad_(True)
    out = loss_fn(pred, b)
    torch.testing.assert_close(out["mse"], ((a - b) ** 2).mean())
    torch.testing.assert_close(out["loss"], out["mse"] + 0.5 * out["lpips"])
    assert out["lpips"].item() > 0
    out["loss"].backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss_fn.parameters())


def test_train_mode_keeps_lpips_deterministic(loss_fn):
    loss_fn.train()
    a, b = _images(1)
    assert loss_fn.training and not loss_fn.lpips.training
    assert loss_fn(a, b)["loss"].item() == loss_fn(a, b)["loss"].item()


def test_missing_backbone_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(WeightsNotFoundError, match=BACKBONE_FILES["vgg"]):
        ReconstructionLoss(lpips_net="vgg")
    missing = str(tmp_path / "my_alexnet.pth")
    with pytest.raises(WeightsNotFoundError, match="my_alexnet.pth"):
        ReconstructionLoss(lpips_net="alex", lpips_weights=missing)
    assert ReconstructionLoss(lpips_weight=0.0).lpips is None


def test_backbone_loaded_from_file_and_from_hub_cache(loss_fn, tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(3)
    reference = loss_fn.lpips.net.state_dict()
    features = {f"features.{k.split('.', 1)[1]}": torch.randn(v.shape, generator=g) for k, v in reference.items()}
    path = tmp_path / "alexnet_features.pth"
    torch.save({**features, "classifier.1.weight": torch.zeros(2, 2)}, path)
    model = build_lpips("alex", backbone_weights=str(path))
    for key, value in model.net.state_dict().items():
        torch.testing.assert_close(value, features[f"features.{key.split('.', 1)[1]}"])

    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(features, home / "hub" / "checkpoints" / BACKBONE_FILES["alex"])
    monkeypatch.setenv("TORCH_HOME", str(home))
    cached = build_lpips("alex")
    torch.testing.assert_close(cached.net.slice1[0].weight, features["features.0.weight"])


def test_wrong_backbone_file_is_reported(tmp_path):
    path = tmp_path / "not_alexnet.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(RuntimeError, match="lacks features.0.bias"):
        build_lpips("alex", backbone_weights=str(path))
