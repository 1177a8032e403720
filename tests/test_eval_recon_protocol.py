"""The reconstructor's test-time camera procedure: geometry of the two passes, and no ground truth used."""
from __future__ import annotations

import math

import torch
from omegaconf import OmegaConf

from eval.protocols import datasets
from eval.protocols.recon import render_test_time_cameras
from eval.protocols.suites import Models, nvs_tables
from fourd.data import generate_scene
from recon.model import Gaussians
from recon.model.reconstructor import ReconstructionOutput


def _rot(axis: int, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    R = torch.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _compose(E: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Camera-from-world ``E [..., 3, 4]`` expressed in a world moved by the rigid ``M [4, 4]`` (x' = M x)."""
    E4 = torch.cat([E, torch.tensor([0.0, 0, 0, 1]).expand(*E.shape[:-2], 1, 4)], dim=-2)
    return (E4 @ torch.linalg.inv(M))[..., :3, :]


class _TwoPassStub(torch.nn.Module):
    """Answers pass 1 (inputs) and pass 2 (first input + targets) with given outputs, in order."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)

    def forward(self, images):
        return self.outputs.pop(0)


def test_target_cameras_are_brought_into_the_gaussians_frame_and_scale():
    B, T, H, W = 1, 1, 14, 14
    E_in = torch.stack([torch.cat([_rot(1, 0.1 * v), torch.tensor([[0.3 * v], [0.0], [4.0]])], 1) for v in range(2)])
    E_tgt = torch.cat([_rot(1, -0.2), torch.tensor([[0.5], [0.1], [3.5]])], 1)[None]
    M1 = torch.eye(4)  # pass 1: an arbitrary rigid world
    M1[:3, :3], M1[:3, 3] = _rot(2, 0.7), torch.tensor([1.0, -2.0, 0.5])
    M2 = torch.eye(4)  # pass 2: another world, and everything 2.5 x larger
    M2[:3, :3], M2[:3, 3] = _rot(0, -0.4), torch.tensor([0.2, 0.3, -1.0])
    s2 = 2.5
    K = torch.tensor([[10.0, 0, 6.5], [0, 10, 6.5], [0, 0, 1]])
    depth = torch.full((B, 2, T, H, W), 4.0)
    g = Gaussians(means=torch.zeros(B, T, 1, 3), quats=torch.tensor([1.0, 0, 0, 0]).expand(B, T, 1, 4),
                  scales=torch.full((B, T, 1, 3), 0.1), opacities=torch.full((B, T, 1), 0.5), colors=torch.ones(B, T, 1, 3))
    pass1 = ReconstructionOutput(extrinsics=_compose(E_in, M1)[None, :, None], depth=depth, gaussians=g,
                                 intrinsics=K.expand(B, 2, T, 3, 3))
    E2 = _compose(torch.cat([E_in[:1], E_tgt]), M2)
    E2 = torch.cat([E2[..., :3], E2[..., 3:] * s2], -1)  # scaled world: translations scale
    pass2 = ReconstructionOutput(extrinsics=E2[None, :, None], depth=torch.cat([depth[:, :1] * s2, depth[:, :1]], 1),
                                 intrinsics=K.expand(B, 2, T, 3, 3))
    out = render_test_time_cameras(_TwoPassStub([pass1, pass2]), torch.rand(B, 2, T, 3, H, W), torch.rand(B, 1, T, 3, H, W))
    # expected: the target camera relative to input 0, in pass-1 (= ground-truth) units
    R0, t0 = E_in[0, :, :3], E_in[0, :, 3]
    R_rel = E_tgt[0, :, :3] @ R0.T
    expected = torch.cat([R_rel, (E_tgt[0, :, 3] - R_rel @ t0)[:, None]], 1)
    torch.testing.assert_close(out["extrinsics"][0, 0, 0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["scale"], torch.tensor([1 / s2]))
    torch.testing.assert_close(out["intrinsics"][0, 0, 0], K)  # the target's predicted intrinsics, as predicted


def _cfg():
    return OmegaConf.create({
        "device": "cpu", "metrics": {"lpips_weights": None, "lpips_net": "vgg"},
        "render": {"background": [0.0, 0.0, 0.0], "backend": "torch"},
        "recon": {"preset": "tiny-4d", "overrides": {}, "weights": None, "init_seed": 0},
    })


def test_test_time_procedure_ignores_ground_truth_cameras_the_oracle_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    s = generate_scene(1_000_000, num_views=4, num_frames=1, height=28, width=28, arc_degrees=60)
    models = Models(_cfg())
    perturbed_ext = s.extrinsics.clone()
    perturbed_ext[..., 3] += 0.7
    results = []
    for ext, K in ((s.extrinsics, s.intrinsics), (perturbed_ext, s.intrinsics * 1.3)):
        clip = datasets.Clip(s.name, s.frames, ext, K)
        boards = nvs_tables(_cfg(), models, [(clip, [0, 2, 3], [1], s.depth)])
        results.append({name: board.rows()[0]["psnr"] for name, board in boards.items()})
    assert results[0]["nvs"] == results[1]["nvs"]
    assert abs(results[0]["nvs (oracle cameras)"] - results[1]["nvs (oracle cameras)"]) > 1e-3
