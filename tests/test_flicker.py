"""VBench temporal flickering against hand-computed values."""
import pytest
import torch

from eval.flicker import grid_flickering, temporal_flickering


def test_flickering_of_hand_computed_videos():
    # frames 0, 0.2, 0.2 -> 8-bit 0, 51, 51: pair MAEs 51 and 0, mean 25.5 -> (255 - 25.5) / 255 = 0.9
    video = torch.tensor([0.0, 0.2, 0.2])[:, None, None, None].expand(3, 3, 4, 4)
    still = torch.full((3, 3, 4, 4), 0.5)
    scores = temporal_flickering(torch.stack([video, still]))
    torch.testing.assert_close(scores, torch.tensor([0.9, 1.0], dtype=torch.float64))
    # half the pixels toggle between 0 and 1 every frame: MAE 127.5 per pair -> 0.5
    toggle = torch.zeros(4, 3, 2, 2)
    toggle[1::2, :, 0] = 1.0
    torch.testing.assert_close(temporal_flickering(toggle[None]), torch.tensor([0.5], dtype=torch.float64))


def test_quantization_follows_8_bit_frames():
    video = torch.tensor([0.0, 0.1])[:, None, None, None].expand(2, 3, 2, 2)[None]
    # 0.1 * 255 = 25.5 -> 26 when stored as 8 bits (round half to even), 25.5 unquantized
    torch.testing.assert_close(temporal_flickering(video), torch.tensor([(255 - 26) / 255], dtype=torch.float64))
    torch.testing.assert_close(temporal_flickering(video, quantize=False), torch.tensor([(255 - 25.5) / 255], dtype=torch.float64))


def test_grid_flickering_scores_every_fixed_view_video():
    grids = torch.full((2, 3, 4, 3, 4, 4), 0.25)
    grids[1, 2, 1::2] = 0.75  # only grid 1, view 2 flickers
    scores = grid_flickering(grids)
    assert scores.shape == (2, 3)
    expected = torch.ones(2, 3, dtype=torch.float64)
    expected[1, 2] = (255 - 127) / 255  # 8-bit 64 <-> 191 on every pair
    torch.testing.assert_close(scores, expected)
    with pytest.raises(ValueError, match="F >= 2"):
        temporal_flickering(grids[0, :, :1])
