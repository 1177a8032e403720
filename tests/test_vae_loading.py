"""Wan2.1 VAE weights: official (.pth / safetensors) and diffusers naming through fsspec, strict errors."""
import io

import fsspec
import pytest
import torch

from fourd.weights import StateDictMismatchError, WeightsNotFoundError, write_safetensors
from tests.reference_tables import read_table
from video4d.vae import load_vae
from video4d.vae.loading import official_to_diffusers_key



@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(1)
    vae = load_vae("tiny")
    return {k: v + 0.05 * torch.randn_like(v) for k, v in vae.state_dict().items()}


def _assert_same_weights(vae, state):
    own = vae.state_dict()
    assert set(own) == set(state)
    for k, v in state.items():
        torch.testing.assert_close(own[k], v, rtol=0, atol=0, msg=k)


def test_safetensors_round_trip_through_memory_fs(tiny_state):
    url = "memory://vae-test/official/vae.safetensors"
    write_safetensors(url, tiny_state)
    vae = load_vae("tiny", weights=url)
    _assert_same_weights(vae, tiny_state)
    reference = load_vae("tiny")
    reference.load_state_dict(tiny_state)
    frames = torch.rand(1, 1, 5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(frames), reference.encode(frames), rtol=0, atol=0)


def test_official_pth_round_trip(tiny_state):
    buffer = io.BytesIO()
    torch.save(tiny_state, buffer)
    url = "memory://vae-test/official/Wan2.1_VAE.pth"
    with fsspec.open(url, "wb") as f:
        f.write(buffer.getvalue())
    _assert_same_weights(load_vae("tiny", weights=url), tiny_state)


def test_diffusers_names_round_trip(tiny_state):
    diffusers_state = {official_to_diffusers_key(k, num_res_blocks=2): v for k, v in tiny_state.items()}
    assert len(diffusers_state) == len(tiny_state)
    url = "memory://vae-test/diffusers/vae/diffusion_pytorch_model.safetensors"
    write_safetensors(url, diffusers_state)
    _assert_same_weights(load_vae("tiny", weights=url), tiny_state)
    _assert_same_weights(load_vae("tiny", weights="memory://vae-test/diffusers/vae"), tiny_state)


def test_diffusers_names_of_the_released_layout():
    official = [key for key, _ in read_table("wan2.1-vae")[1]]
    mapped = {official_to_diffusers_key(k, num_res_blocks=2): k for k in official}
    assert len(mapped) == len(official)
    # names as in diffusers' AutoencoderKLWan (and its Wan2.1 conversion script)
    expected = {
        "quant_conv.weight": "conv1.weight",
        "post_quant_conv.bias": "conv2.bias",
        "encoder.conv_in.weight": "encoder.conv1.weight",
        "encoder.down_blocks.2.resample.1.weight": "encoder.downsamples.2.resample.1.weight",
        "encoder.down_blocks.3.conv_shortcut.weight": "encoder.downsamples.3.shortcut.weight",
        "encoder.down_blocks.5.time_conv.weight": "encoder.downsamples.5.time_conv.weight",
        "encoder.down_blocks.10.norm2.gamma": "encoder.downsamples.10.residual.3.gamma",
        "encoder.mid_block.resnets.1.conv2.weight": "encoder.middle.2.residual.6.weight",
        "encoder.mid_block.attentions.0.to_qkv.weight": "encoder.middle.1.to_qkv.weight",
        "encoder.norm_out.gamma": "encoder.head.0.gamma",
        "encoder.conv_out.bias": "encoder.head.2.bias",
        "decoder.mid_block.attentions.0.norm.gamma": "decoder.middle.1.norm.gamma",
        "decoder.up_blocks.0.upsamplers.0.time_conv.weight": "decoder.upsamples.3.time_conv.weight",
        "decoder.up_blocks.1.resnets.0.conv_shortcut.weight": "decoder.upsamples.4.shortcut.weight",
        "decoder.up_blocks.1.upsamplers.0.resample.1.bias": "decoder.upsamples.7.resample.1.bias",
        "decoder.up_blocks.2.upsamplers.0.resample.1.weight": "decoder.upsamples.11.resample.1.weight",
        "decoder.up_blocks.3.resnets.2.norm1.gamma": "decoder.upsamples.14.residual.0.gamma",
        "decoder.conv_out.weight": "decoder.head.2.weight",
    }
    assert {k: mapped.get(k) for k in expected} == expected


def test_missing_file_names_it():
    with pytest.raises(WeightsNotFoundError, match="memory://vae-test/nowhere/vae.pth"):
        load_vae("tiny", weights="memory://vae-test/nowhere/vae.pth")


def test_mismatched_checkpoint_is_reported_by_key(tiny_state):
    incomplete = dict(tiny_state)
    del incomplete["decoder.head.2.bias"]
    incomplete["encoder.extra.weight"] = torch.zeros(1)
    url = "memory://vae-test/bad/vae.safetensors"
    write_safetensors(url, incomplete)
    with pytest.raises(StateDictMismatchError, match="decoder.head.2.bias") as err:
        load_vae("tiny", weights=url)
    assert "encoder.extra.weight" in str(err.value)
    wrong_width = {k: v for k, v in tiny_state.items()}
    wrong_width["conv2.weight"] = torch.zeros(8, 8, 1, 1, 1)
    write_safetensors(url, wrong_width)
    with pytest.raises(StateDictMismatchError, match="conv2.weight"):
        load_vae("tiny", weights=url)
