"""eval.arc_probe: the angle it regresses is the cameras' relative rotation, and it reads an angle the images do show."""
import math

import pytest
import torch

from eval.arc_probe import arc_probe, view_pairs
from recon.pretrain_task import base_scene


def _rotation_deg(a, b):
    """Angle of the rotation taking camera-from-world b to a (Rodrigues: trace = 1 + 2 cos)."""
    rel = a[:3, :3].double() @ b[:3, :3].double().T
    return math.degrees(math.acos(max(-1.0, min(1.0, (rel.trace().item() - 1) / 2))))


def test_pairs_carry_the_rotation_of_the_view_relative_to_view_0():
    seeds = [3, 7]
    x, angles = view_pairs(seeds, size=28, view=3)
    _, near = view_pairs(seeds, size=28, view=1)
    assert x.shape == (2, 6, 28, 28) and angles.shape == (2,)
    for seed, angle, first in zip(seeds, angles.tolist(), near.tolist()):
        s = base_scene(seed, 4, 28, 28, (20.0, 120.0))
        ext = s["extrinsics"][:, 0]  # [V, 3, 4]
        assert angle == pytest.approx(_rotation_deg(ext[3], ext[0]), abs=1e-3)
        assert torch.equal(x[seeds.index(seed), 3:], s["frames"][3, 0].float())
        assert 0 < first < angle  # views in order along the arc
    with pytest.raises(ValueError, match="view must be in 1..3"):
        view_pairs([0], view=0)


def test_probe_reads_an_arc_the_images_show_and_scores_the_mean_baseline():
    g = torch.Generator().manual_seed(0)

    def shown(n):  # images whose brightness is the angle: readable by construction
        arcs = torch.rand(n, generator=g) * 100 + 20
        return (arcs / 120)[:, None, None, None].expand(n, 6, 8, 8) + 0.01 * torch.randn(n, 6, 8, 8, generator=g), arcs

    train, held = shown(128), shown(64)
    out = arc_probe(train, held, steps=400, eval_every=200)
    assert out["baseline_mae_deg"] == pytest.approx((held[1] - train[1].mean()).abs().mean().item())
    assert out["held_out_mae_deg"] < 0.3 * out["baseline_mae_deg"] and [s for s, _ in out["curve"]] == [200, 400]
    assert not math.isnan(out["train_batch_mae_deg"])
