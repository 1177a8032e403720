"""One contract for load_dit, load_vae, load_text_encoder and load_reconstructor.

``load_x(config=None, weights=None, *, device="cpu", dtype=None, ...)``: ``device="meta"`` builds
for key inspection without storage; the module comes back in eval mode; with ``config=None`` the
config is read from the weights file's safetensors metadata (``dit_config``, ``vae_config``,
``recon_config``, ``text_encoder_config``) and a file without it (or no file) is a clear error.
"""
from __future__ import annotations

import json

import pytest
import torch

from fourd.weights import config_metadata, read_metadata, write_safetensors
from recon.model import load_reconstructor
from recon.model.loading import recon_metadata
from video4d import load_dit, load_text_encoder, load_vae
from video4d.model.loading import dit_metadata
from video4d.text_encoder import text_encoder_metadata
from video4d.vae.config import VAEConfig
from video4d.vae.loading import vae_metadata


def _dit_out(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 2, 16, 4, 4, generator=g)
    ctx = torch.randn(1, 3, model.config.text_dim, generator=g)
    return model(x, torch.tensor([500.0]), ctx)


def _vae_out(model):
    return model.encode(torch.rand(1, 1, 1, 3, 16, 16, generator=torch.Generator().manual_seed(0)))


def _recon_out(model):
    out = model(torch.rand(1, 2, 2, 3, 28, 28, generator=torch.Generator().manual_seed(0)))
    return torch.cat([out.pose_enc.flatten(), out.depth.flatten()])


def _text_out(model):
    return torch.cat(model.encode(["a red sphere spins left", "camera static"]))


# (name, loader, config, build a random model, metadata helper, output of a fixed input)
LOADERS = {
    "dit": (load_dit, {"preset": "tiny", "attention_variant": "full"}, lambda c: load_dit(c, init="random"), dit_metadata, _dit_out),
    "vae": (load_vae, VAEConfig(dim=8, latents_mean=(0.5,) * 16, latents_std=(2.0,) * 16, init_seed=3), lambda c: load_vae(c), vae_metadata, _vae_out),
    "recon": (load_reconstructor, {"preset": "tiny-4d"}, lambda c: load_reconstructor(c), recon_metadata, _recon_out),
    "text": (load_text_encoder, "tiny", lambda c: load_text_encoder(c), text_encoder_metadata, _text_out),
}
KEYS = {"dit": "dit_config", "vae": "vae_config", "recon": "recon_config", "text": "text_encoder_config"}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_meta_build_has_the_keys_and_no_storage(name):
    load, config, build, _, _ = LOADERS[name]
    torch.manual_seed(0)
    real = build(config)
    meta = load(config, device="meta")
    assert [(k, v.shape) for k, v in meta.state_dict().items()] == [(k, v.shape) for k, v in real.state_dict().items()]
    assert all(t.is_meta for t in [*meta.parameters(), *meta.buffers()])
    assert not meta.training and not real.training
    # a state dict is checked on meta (strict keys and shapes), nothing allocated
    checked = load(config, weights=real.state_dict(), device="meta")
    assert all(t.is_meta for t in checked.parameters())


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_export_then_load_without_config_reproduces_outputs(name, tmp_path):
    load, config, build, metadata, run = LOADERS[name]
    torch.manual_seed(0)
    model = build(config)
    with torch.no_grad():
        for p in model.parameters():  # move off the init so the file, not the init, decides
            p.add_(0.01 * torch.randn_like(p))
    url = str(tmp_path / "model.safetensors")
    write_safetensors(url, model.state_dict(), metadata=metadata(config))
    assert KEYS[name] in read_metadata(url)
    again = load(weights=url)
    assert not again.training
    with torch.no_grad():
        torch.testing.assert_close(run(again), run(model), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_no_config_anywhere_is_a_clear_error(name, tmp_path):
    load, config, build, _, _ = LOADERS[name]
    with pytest.raises(ValueError, match="config="):
        load()
    url = str(tmp_path / "bare.safetensors")
    write_safetensors(url, build(config).state_dict())
    with pytest.raises(ValueError, match=rf"{KEYS[name]}.*config="):
        load(weights=url)


def test_training_task_metadata_format_loads():
    """The training tasks store the Hydra model node (preset + overrides) as JSON: the same loads."""
    node = {"preset": "tiny", "attention_variant": "full", "rope_t_max": 4}
    assert json.loads(config_metadata("dit_config", node)["dit_config"]) == node
    assert load_dit(json.loads(dit_metadata(node)["dit_config"]), device="meta").config.rope_t_max == 4


def test_dtype_names_and_vae_statistics_from_metadata(tmp_path):
    vae = load_vae("tiny", dtype="bfloat16")
    assert next(vae.parameters()).dtype == torch.bfloat16
    config = VAEConfig(dim=8, latents_mean=tuple(float(i) for i in range(16)), latents_std=(3.0,) * 16)
    url = str(tmp_path / "vae.safetensors")
    write_safetensors(url, load_vae(config).state_dict(), metadata=vae_metadata(config))
    assert load_vae(weights=url).config == config
    with pytest.raises(ValueError, match="unknown dtype"):
        load_vae("tiny", dtype="float8")


def test_random_vae_has_its_own_seed():
    """Issue 10: the random-init VAE depends only on its config's init_seed, not on the global RNG
    (so the training task's VAE, built after the DiT's seeded init, is load_vae("tiny"))."""
    torch.manual_seed(0)
    a = load_vae("tiny")
    torch.manual_seed(1)
    torch.randn(1000)
    state = torch.get_rng_state()
    b = load_vae("tiny")
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not advanced
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
    other = load_vae({"preset": "tiny", "init_seed": 1}).state_dict()
    assert any(not torch.equal(x, other[k]) for k, x in a.state_dict().items() if x.is_floating_point() and x.numel() > 1)
