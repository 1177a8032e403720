"""The latent store of pre-encoded data: put / get round trip, ids that do not collide, a file that holds another id."""
import pytest
import torch

from video4d.vae import LatentCache


def test_round_trip_ids_and_mismatch():
    cache = LatentCache("memory://latent-cache-test/a")
    a, b = torch.randn(2, 2, 16, 2, 2), torch.randn(1, 1, 16, 2, 2)
    cache.put("scene/a", a)
    cache.put("scene_a", b)
    assert cache.url("scene/a") != cache.url("scene_a")
    torch.testing.assert_close(cache.get("scene/a"), a, rtol=0, atol=0)
    torch.testing.assert_close(cache.get("scene_a"), b, rtol=0, atol=0)
    assert cache.get("never-stored") is None
    with pytest.raises(ValueError, match=r"\[N, T', C, h, w\]"):
        cache.put("bad", torch.zeros(2, 16, 2, 2))
    other = LatentCache("memory://latent-cache-test/a")
    other.url = lambda sample_id: cache.url("scene/a")  # a file that holds another sample
    with pytest.raises(ValueError, match="holds sample 'scene/a'"):
        other.get("scene_b")
