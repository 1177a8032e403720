"""Latent cache: a miss encodes and stores, a hit returns the stored tensor without encoding."""
import pytest
import torch

from video4d.vae import LatentCache, load_vae


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(2)
    return load_vae("tiny")


def test_hit_returns_identical_latents_without_encoding(vae, monkeypatch):
    cache = LatentCache("memory://latent-cache-test/a")
    frames = torch.rand(2, 5, 3, 16, 16)
    with torch.no_grad():
        first = cache.get_or_encode("scene 01/clip:3", frames, vae)
    assert first.shape == (2, 2, 16, 2, 2)
    assert (cache.hits, cache.misses) == (0, 1)

    def refuse(*args, **kwargs):
        raise AssertionError("encoder called on a cache hit")

    monkeypatch.setattr(vae, "encode", refuse)
    second = cache.get_or_encode("scene 01/clip:3", frames, vae)
    assert (cache.hits, cache.misses) == (1, 1)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    assert second.dtype == first.dtype


def test_ids_do_not_collide_and_misses_encode(vae):
    cache = LatentCache("memory://latent-cache-test/b")
    frames_a, frames_b = torch.rand(1, 1, 3, 16, 16), torch.rand(1, 1, 3, 16, 16)
    with torch.no_grad():
        a = cache.get_or_encode("scene/a", frames_a, vae)
        b = cache.get_or_encode("scene_a", frames_b, vae)
    assert cache.url("scene/a") != cache.url("scene_a")
    assert cache.misses == 2
    torch.testing.assert_close(cache.get("scene/a"), a, rtol=0, atol=0)
    torch.testing.assert_close(cache.get("scene_a"), b, rtol=0, atol=0)
    assert cache.get("never-stored") is None


def test_stale_entry_is_reported(vae):
    cache = LatentCache("memory://latent-cache-test/c")
    cache.put("clip", torch.zeros(1, 1, 16, 4, 4))
    with pytest.raises(ValueError, match="stale"):
        cache.get_or_encode("clip", torch.rand(1, 1, 3, 16, 16), vae)
