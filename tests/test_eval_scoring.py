"""Baselines and scoring on hand-made grids whose answers are known in closed form."""
from __future__ import annotations

import math

import pytest
import torch

from eval.protocols.baselines import generation_baselines, neighbour_inputs, nvs_baselines
from eval.protocols.generation import latent_time_of_frames, scored_cells
from eval.protocols.scoring import MetricSpec, Scoreboard
from eval.tables import combined_markdown, markdown_table
from fourd.weights import WeightsNotFoundError


def _grid(V: int, T: int) -> torch.Tensor:
    """Cell (v, t) is the constant image (10 v + t) / 100."""
    values = torch.tensor([[(10 * v + t) / 100 for t in range(T)] for v in range(V)])
    return values[:, :, None, None, None].expand(V, T, 3, 4, 4).clone()


def test_generation_baselines_copy_the_reference_row_and_column():
    gt = _grid(3, 5)
    same_view, same_time = generation_baselines(gt, ref_view=0, ref_time=0).values()
    assert same_view[2, 4, 0, 0, 0].item() == pytest.approx(0.20)  # gt[2, 0]
    assert same_time[2, 4, 0, 0, 0].item() == pytest.approx(0.04)  # gt[0, 4]


def test_nvs_baselines_neighbours_and_means():
    gt = _grid(5, 2)
    inputs, targets = [0, 3], [1, 2, 4]
    assert [neighbour_inputs(v, inputs) for v in targets] == [(0, 1), (0, 1), (1, 1)]
    left, right, mean2, mean_all = nvs_baselines(gt[inputs], inputs, targets).values()
    assert left[:, 1, 0, 0, 0].tolist() == pytest.approx([0.01, 0.01, 0.31])
    assert right[:, 1, 0, 0, 0].tolist() == pytest.approx([0.31, 0.31, 0.31])
    assert mean2[:, 0, 0, 0, 0].tolist() == pytest.approx([0.15, 0.15, 0.30])
    assert mean_all[:, 0, 0, 0, 0].tolist() == pytest.approx([0.15, 0.15, 0.15])


def test_scored_cells_skip_every_frame_a_reference_latent_encodes():
    assert latent_time_of_frames(9).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert latent_time_of_frames(5, factor=2).tolist() == [0, 1, 1, 2, 2]
    mask = scored_cells(3, 9, ref_view=0, ref_time=1)
    assert mask.sum().item() == 2 * 5 and not mask[0].any() and not mask[:, 1:5].any() and mask[1, 0]
    with pytest.raises(ValueError, match="4k \\+ 1"):
        latent_time_of_frames(6)


def test_scoreboard_psnr_of_a_constant_error_and_the_cell_map(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no LPIPS backbone in the hub cache
    gt = torch.full((2, 3, 3, 16, 16), 0.5)
    pred = gt + 0.1  # MSE 0.01 -> 20 dB
    pred[1, 2] += 0.1  # MSE 0.04 -> 10 log10(25) dB
    board = Scoreboard(MetricSpec(lpips_weights="/nonexistent/vgg16-397923af.pth"))
    mask = torch.tensor([[False, True, True], [False, True, True]])
    with pytest.raises(WeightsNotFoundError, match="vgg16"):
        board.add_grid("m", pred, gt, mask)  # an explicit missing file is an error, not "n/a"
    board = Scoreboard(MetricSpec())
    board.add_grid("m", pred, gt, mask)
    (row,) = board.rows()
    assert row["images"] == 4
    assert row["psnr"] == pytest.approx((3 * 20 + 10 * math.log10(25)) / 4, abs=1e-4)
    assert row["lpips"] == "n/a (no vgg16-397923af.pth)"
    cells = board.cell_maps()["m"]
    assert cells[0][0] is None and cells[0][1] == pytest.approx(20.0, abs=1e-3)


def test_markdown_tables_format_numbers_and_na_strings():
    rows = [{"method": "a", "psnr": 20.123456, "ssim": 0.5, "lpips": "n/a (no x.pth)", "images": 3}]
    table = markdown_table(rows)
    assert "| a | 20.12 | 0.5000 | n/a (no x.pth) | 3 |" in table
    doc = {"benchmark": "b", "tables": {"t": {"rows": rows}}}
    combined = combined_markdown([{**doc, "label": "y=0,x=1", "overrides": ["y=0", "x=1"]},
                                  {**doc, "label": "y=0,x=2", "overrides": ["y=0", "x=2"]}])
    assert "| run | method | PSNR (dB) ↑ | SSIM ↑ | LPIPS ↓ | images |" in combined
    assert "| x=1 | a | 20.12 |" in combined and "| x=2 | a | 20.12 |" in combined
