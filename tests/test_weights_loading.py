"""DiT state-dict compatibility with the official Wan2.1 checkpoints, key formats and loading."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fourd.weights import StateDictMismatchError, WeightsNotFoundError, atomic_write_bytes, write_safetensors
from tests.reference_tables import key_shape_sha256, read_table, state_rows
from video4d.model import DiTConfig, from_diffusers, load_dit, load_weights, resolve_config, to_diffusers

REFERENCE = Path(__file__).parent / "data" / "reference"
CTOR_FIELDS = ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "text_len", "freq_dim", "eps")


def tiny_state(variant: str = "fused", seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = load_dit({"preset": "tiny", "attention_variant": variant}, init="random")
    return {k: v.clone() for k, v in model.state_dict().items()}


def memory_url(name: str) -> str:
    return f"memory://test_weights_loading/{uuid.uuid4().hex}/{name}"


@pytest.mark.parametrize("name", ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b"])
def test_meta_model_matches_official_key_table(name):
    header, rows = read_table(name)
    assert key_shape_sha256(rows) == header["key_shape_sha256"]  # the table itself is intact
    cfg = resolve_config(name)
    for field in CTOR_FIELDS:
        assert getattr(cfg, field) == header["ctor"][field], field
    assert list(cfg.patch_size) == header["ctor"]["patch_size"]
    model = load_dit(name, device="meta")
    ours = state_rows(model)
    assert dict(ours) == dict(rows)
    assert key_shape_sha256(ours) == header["key_shape_sha256"]
    assert sum(p.numel() for p in model.parameters()) == header["total_params"]
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("variant, new_layer", [("sequential", "cross_view_attn"), ("parallel_linear", "sync"), ("parallel_blend", "sync")])
def test_variant_adds_only_new_layer_keys(variant, new_layer):
    _, rows = read_table("wan2.1-t2v-1.3b")
    model = load_dit({"preset": "wan2.1-t2v-1.3b", "attention_variant": variant}, device="meta")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    extra = set(shapes) - {k for k, _ in rows}
    assert {k for k, _ in rows} <= set(shapes)
    assert extra and all(k.split(".")[2] == new_layer for k in extra)
    assert {k.split(".")[1] for k in extra} == {str(i) for i in range(30)}


def test_diffusers_key_round_trip_on_official_table():
    _, rows = read_table("wan2.1-t2v-14b")
    state = {k: torch.empty(shape, device="meta") for k, shape in rows}
    theirs = to_diffusers(state)
    assert len(theirs) == len(state)
    for ours_key, diffusers_key in [
        ("time_embedding.0.weight", "condition_embedder.time_embedder.linear_1.weight"),
        ("time_projection.1.bias", "condition_embedder.time_proj.bias"),
        ("text_embedding.2.weight", "condition_embedder.text_embedder.linear_2.weight"),
        ("blocks.7.self_attn.o.weight", "blocks.7.attn1.to_out.0.weight"),
        ("blocks.7.cross_attn.norm_k.weight", "blocks.7.attn2.norm_k.weight"),
        ("blocks.7.norm3.bias", "blocks.7.norm2.bias"),
        ("blocks.7.ffn.0.weight", "blocks.7.ffn.net.0.proj.weight"),
        ("blocks.7.ffn.2.bias", "blocks.7.ffn.net.2.bias"),
        ("blocks.7.modulation", "blocks.7.scale_shift_table"),
        ("head.modulation", "scale_shift_table"),
        ("head.head.weight", "proj_out.weight"),
        ("patch_embedding.weight", "patch_embedding.weight"),
    ]:
        assert theirs[diffusers_key] is state[ours_key]
    back = from_diffusers(theirs)
    assert list(back) == list(state) and all(back[k] is state[k] for k in state)


def test_load_through_memory_fsspec_official_diffusers_and_prefixed():
    state = tiny_state()
    torch.manual_seed(1)
    x, t, ctx = torch.randn(1, 2, 2, 16, 4, 4), torch.tensor([700.0]), torch.randn(1, 3, 32)
    reference_model = load_dit("tiny", state)
    expected = reference_model(x, t, ctx)
    layouts = {
        "official.safetensors": state,
        "diffusers.safetensors": to_diffusers(state),
        "prefixed.safetensors": {f"module.model.{k}": v for k, v in to_diffusers(state).items()},
        "bf16.safetensors": {k: v.to(torch.bfloat16) for k, v in state.items()},
    }
    for name, layout in layouts.items():
        url = memory_url(name)
        write_safetensors(url, layout)
        model = load_dit("tiny", url)
        loaded = model.state_dict()
        tol = 1e-2 if name.startswith("bf16") else 0.0
        for k, v in state.items():
            assert loaded[k].dtype == torch.float32
            torch.testing.assert_close(loaded[k], v, rtol=tol, atol=tol, msg=f"{name}: {k}")
        if tol == 0.0:
            torch.testing.assert_close(model(x, t, ctx), expected, rtol=0, atol=0)


def test_load_sharded_index_json():
    state = tiny_state()
    base = memory_url("ckpt")
    keys = list(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    weight_map = {}
    for shard, shard_keys in shards.items():
        write_safetensors(f"{base}/{shard}", {k: state[k] for k in shard_keys})
        weight_map.update({k: shard for k in shard_keys})
    atomic_write_bytes(f"{base}/model.safetensors.index.json", json.dumps({"weight_map": weight_map}).encode())
    for url in (f"{base}/model.safetensors.index.json", base):
        loaded = load_dit("tiny", url).state_dict()
        assert set(loaded) == set(state)
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_strict_loading_names_missing_unexpected_and_misshaped_keys():
    state = tiny_state()
    del state["blocks.1.self_attn.k.bias"]
    state["blocks.0.self_attn.extra.weight"] = torch.zeros(3)
    state["head.head.weight"] = torch.zeros(5, 64)
    with pytest.raises(StateDictMismatchError) as err:
        load_dit("tiny", state)
    message = str(err.value)
    assert "blocks.1.self_attn.k.bias" in message
    assert "blocks.0.self_attn.extra.weight" in message
    assert "head.head.weight" in message


def test_missing_weights_file_is_named():
    url = memory_url("absent.safetensors")
    with pytest.raises(WeightsNotFoundError, match="absent.safetensors"):
        load_dit("tiny", url)


@pytest.mark.parametrize("variant", ["sequential", "parallel_blend", "parallel_linear"])
def test_official_weights_into_variant_report_only_new_keys(variant):
    state = tiny_state("fused")
    model = load_dit({"preset": "tiny", "attention_variant": variant}, device="meta")
    missing = load_weights(model, state, source="tiny official")
    new_keys = {k for k in model.state_dict() if k.split(".")[2:3] in (["cross_view_attn"], ["sync"])}
    assert new_keys and set(missing) == new_keys
    loaded = model.state_dict()
    assert not any(v.is_meta for v in loaded.values())
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    if variant == "sequential":
        assert all(loaded[f"blocks.{i}.cross_view_attn.o.weight"].abs().sum() == 0 for i in range(2))
        assert loaded["blocks.0.cross_view_attn.q.weight"].abs().sum() > 0
    elif variant == "parallel_blend":
        assert all(loaded[f"blocks.{i}.sync.alpha"].item() == 0.5 for i in range(2))
    else:
        eye = torch.eye(64)
        torch.testing.assert_close(loaded["blocks.1.sync.weight"], torch.cat((eye, eye), 1) / 2)
    # a fine-tuned variant checkpoint (holding the new keys) loads with nothing missing
    finetuned = tiny_state(variant, seed=3)
    again = load_dit({"preset": "tiny", "attention_variant": variant}, finetuned).state_dict()
    assert all(torch.equal(again[k], v) for k, v in finetuned.items())


def test_config_from_mapping_dictconfig_and_errors():
    cfg = OmegaConf.create({"preset": "tiny", "attention_variant": "full", "rope_t_max": 4, "patch_size": [1, 2, 2]})
    resolved = resolve_config(cfg)
    assert resolved == resolve_config("tiny").replace(attention_variant="full", rope_t_max=4)
    assert resolve_config(dict(dim=32, ffn_dim=64, num_heads=2, num_layers=1)).head_dim == 16
    with pytest.raises(ValueError, match="attention_varient"):
        resolve_config({"preset": "tiny", "attention_varient": "full"})
    with pytest.raises(ValueError, match="unknown DiT preset"):
        resolve_config("wan9")
    with pytest.raises(ValueError, match="attention_variant"):
        DiTConfig(dim=64, ffn_dim=64, num_heads=2, num_layers=1, attention_variant="mixed")
    with pytest.raises(ValueError, match="rope_t_max"):
        resolve_config({"preset": "tiny", "rope_t_max": 1024})
