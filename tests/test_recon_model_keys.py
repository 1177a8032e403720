"""State-dict layout and loading of the reconstructor against the official VGGT-1B key table."""
import pytest
import torch

from fourd.weights import StateDictMismatchError, WeightsNotFoundError, write_safetensors
from recon.model import build_reconstructor, is_new_layer_key, load_reconstructor, load_weights
from tests.reference_tables import key_shape_sha256, read_table

def _meta(config):
    with torch.device("meta"):
        return build_reconstructor(config)


def test_vggt_1b_state_dict_equals_the_official_table():
    header, rows = read_table("vggt-1b")
    state = _meta("vggt-1b").state_dict()
    mine = [(k, tuple(v.shape)) for k, v in state.items()]
    assert len(mine) == header["keys"] == 1797
    assert mine == rows
    assert key_shape_sha256(mine) == header["key_shape_sha256"]
    assert sum(v.numel() for v in state.values()) == header["total_params"]
    assert all(v.dtype == torch.float32 for v in state.values())


def test_4d_model_loads_the_vggt_1b_layout_with_only_new_layers_missing():
    _, rows = read_table("vggt-1b")
    model = _meta("vggt-1b-4d")
    checkpoint = {k: torch.empty(shape, device="meta") for k, shape in rows}
    report = load_weights(model, checkpoint, source="vggt-1b table")
    assert report.missing and all(is_new_layer_key(k) for k in report.missing)
    assert set(report.missing) == {k for k in model.state_dict() if is_new_layer_key(k)}
    assert {k.split(".")[0] for k in report.dropped} == {"point_head", "track_head"}
    assert len(report.dropped) == sum(k.startswith(("point_head.", "track_head.")) for k, _ in rows)


def test_tiny_4d_loads_a_static_tiny_file_and_reports_only_new_layers(tmp_path):
    torch.manual_seed(0)
    static = build_reconstructor("tiny")
    url = f"{tmp_path}/tiny.safetensors"
    write_safetensors(url, static.state_dict())
    model = load_reconstructor("tiny-4d", url)
    report = model.load_report
    new_keys = {k for k in model.state_dict() if is_new_layer_key(k)}
    assert set(report.missing) == new_keys
    assert any(".frame_temporal_blocks." in k for k in new_keys) and any(k.startswith("gaussian_head.") for k in new_keys)
    assert {k.split(".")[0] for k in report.dropped} == {"point_head", "track_head"}
    reference = static.state_dict()
    for k, v in model.state_dict().items():
        if k in reference:
            assert torch.equal(v, reference[k]), k


def test_own_checkpoint_round_trips_without_missing_keys(tmp_path):
    torch.manual_seed(1)
    model = build_reconstructor("tiny-4d")
    url = f"{tmp_path}/ours.safetensors"
    write_safetensors(url, model.state_dict())
    again = load_reconstructor("tiny-4d", url)
    assert again.load_report.missing == [] and again.load_report.dropped == []
    loaded = again.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in model.state_dict().items())


def test_loading_errors_name_the_problem(tmp_path):
    state = build_reconstructor("tiny").state_dict()
    del state["aggregator.frame_blocks.0.attn.qkv.weight"]
    with pytest.raises(StateDictMismatchError, match=r"aggregator\.frame_blocks\.0\.attn\.qkv\.weight"):
        load_weights(build_reconstructor("tiny-4d"), state)
    with pytest.raises(WeightsNotFoundError, match="nowhere.safetensors"):
        load_reconstructor("tiny", f"{tmp_path}/nowhere.safetensors")


def test_a_model_without_temporal_attention_drops_and_reports_the_temporal_keys_of_a_4d_export():
    four_d = build_reconstructor("tiny-4d").state_dict()
    temporal = sorted(k for k in four_d if "_temporal_blocks." in k)
    no_temporal = build_reconstructor({"preset": "tiny-4d", "temporal": False})
    report = load_weights(no_temporal, four_d)
    assert temporal and sorted(report.dropped) == temporal and report.missing == []
    assert all(torch.equal(v, four_d[k]) for k, v in no_temporal.state_dict().items())
    with pytest.raises(StateDictMismatchError, match="frame_temporal_blockz"):  # the relaxation is by prefix: a typo stays an error
        load_weights(no_temporal, {**four_d, "aggregator.frame_temporal_blockz.0.attn.qkv.weight": torch.zeros(1)})


def test_config_overrides_and_errors():
    model = _meta({"preset": "tiny-4d", "depth": 5, "dpt_layers": [1, 2, 3, 4], "gaussian": {"init_opacity": 0.3}})
    assert len(model.aggregator.frame_blocks) == 5 and model.cfg.dpt_layers == (1, 2, 3, 4)
    assert model.cfg.gaussian.init_opacity == 0.3
    with pytest.raises(ValueError, match="unknown reconstructor preset"):
        build_reconstructor("vggt-2b")
    with pytest.raises(ValueError, match="depthh"):
        build_reconstructor({"preset": "tiny", "depthh": 3})
