"""The gsplat backend agrees with the torch rasterizer (runs only where CUDA and gsplat exist)."""
import pytest
import torch

from recon.render import gsplat_backend, render_gaussians

pytestmark = pytest.mark.skipif(not gsplat_backend.gsplat_available(), reason="needs CUDA and the gsplat package")


def _scene(device):
    g = torch.Generator().manual_seed(0)
    N, C = 500, 2
    means = torch.randn(N, 3, generator=g) * 0.6 + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(N, 4, generator=g)
    scales = torch.rand(N, 3, generator=g) * 0.08 + 0.01
    opacities = torch.rand(N, generator=g) * 0.9 + 0.05
    colors = torch.rand(N, 3, generator=g)
    viewmats = torch.eye(4).repeat(C, 1, 1)
    viewmats[1, 0, 3] = 0.3
    Ks = torch.tensor([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]]).repeat(C, 1, 1)
    backgrounds = torch.tensor([[0.2, 0.3, 0.4], [1.0, 1.0, 1.0]])
    tensors = [means, quats, scales, opacities, colors, viewmats, Ks, backgrounds]
    return [t.to(device) for t in tensors]


def test_gsplat_and_torch_backends_agree():
    means, quats, scales, opacities, colors, viewmats, Ks, backgrounds = _scene("cuda")
    outs, grads = {}, {}
    for backend in ("torch", "gsplat"):
        params = [t.clone().requires_grad_(True) for t in (means, opacities, colors)]
        color, alpha, depth = render_gaussians(
            params[0], quats, scales, params[1], params[2], viewmats, Ks, 64, 48, backgrounds=backgrounds, backend=backend
        )
        (color.square().sum() + alpha.sum()).backward()
        outs[backend] = (color.detach(), alpha.detach(), depth.detach())
        grads[backend] = [p.grad for p in params]
    for a, b in zip(outs["torch"][:2], outs["gsplat"][:2]):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)
    covered = outs["torch"][1] > 0.2
    torch.testing.assert_close(outs["torch"][2][covered], outs["gsplat"][2][covered], atol=1e-3, rtol=1e-3)
    for a, b in zip(grads["torch"], grads["gsplat"]):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-2)
