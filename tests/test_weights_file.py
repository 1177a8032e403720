"""Per-tensor and per-slice reading (fourd.weights.WeightsFile) of single, sharded (index.json) and
.pt checkpoints, streamed writing (SafetensorsWriter), and the meta-device build that fills a model
one tensor at a time in the requested dtype."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from fourd.weights import SafetensorsWriter, WeightsFile, read_state_dict, write_safetensors


def _state():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(5, 7, generator=g), "b.bias": torch.randn(3, generator=g).to(torch.bfloat16),
            "c.count": torch.arange(6, dtype=torch.int64).reshape(2, 3)}


def test_single_sharded_and_pt_files_read_tensors_and_slices(tmp_path):
    state = _state()
    write_safetensors(str(tmp_path / "one.safetensors"), state)
    shards = tmp_path / "sharded"
    shards.mkdir()
    save_file({"a.weight": state["a.weight"]}, str(shards / "m-00001.safetensors"))
    save_file({k: state[k] for k in ("b.bias", "c.count")}, str(shards / "m-00002.safetensors"))
    index = {"weight_map": {"a.weight": "m-00001.safetensors", "b.bias": "m-00002.safetensors", "c.count": "m-00002.safetensors"}}
    (shards / "m.safetensors.index.json").write_text(json.dumps(index))
    torch.save({"state_dict": state}, str(tmp_path / "w.pt"))
    for url in (tmp_path / "one.safetensors", shards, shards / "m.safetensors.index.json", tmp_path / "w.pt"):
        f = WeightsFile(str(url))
        assert sorted(f.keys()) == sorted(state)
        assert {k: (tuple(v.shape), v.dtype) for k, v in f.meta().items()} == {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
        for k, v in state.items():
            assert torch.equal(f.tensor(k), v)
            assert torch.equal(f.flat_slice(k, 1, 3), v.reshape(-1)[1:3])
        assert f.flat_slice("a.weight", 35, 35).numel() == 0
        with pytest.raises(IndexError):
            f.flat_slice("a.weight", 30, 36)
    (shards / "m-00002.safetensors").unlink()
    from fourd.weights import WeightsNotFoundError

    for read in (WeightsFile, read_state_dict):  # one error naming the missing shard, from either reader
        with pytest.raises(WeightsNotFoundError, match=r"sharded \(shard m-00002\.safetensors\) not found"):
            read(str(shards))


def test_streamed_writer_round_trips_and_checks_the_order(tmp_path):
    state = _state()
    url = str(tmp_path / "out" / "streamed.safetensors")
    writer = SafetensorsWriter(url, [(k, v.shape, v.dtype) for k, v in state.items()], {"note": "x"})
    for k, v in state.items():
        writer.write(k, v)
    writer.close()
    got = load_file(url)
    assert all(torch.equal(got[k], v) for k, v in state.items()) and list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "streamed.safetensors"]
    bad = SafetensorsWriter(str(tmp_path / "bad.safetensors"), [(k, v.shape, v.dtype) for k, v in state.items()])
    with pytest.raises(ValueError, match="expected a.weight"):
        bad.write("b.bias", state["b.bias"])
    with pytest.raises(ValueError, match="3 tensors were not written"):
        bad.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the unfinished file's temporary copy is gone


def test_weights_file_refuses_a_cut_short_file_at_open_naming_it(tmp_path):
    from fourd.weights import WeightsFileError

    url = str(tmp_path / "w.safetensors")
    write_safetensors(url, _state())
    data = open(url, "rb").read()
    open(url, "wb").write(data[:-5])
    with pytest.raises(WeightsFileError, match=r"w\.safetensors is damaged"):
        WeightsFile(url)
    with pytest.raises(WeightsFileError, match=r"w\.safetensors is damaged"):
        read_state_dict(url)


def test_dit_loads_tensor_by_tensor_in_the_requested_dtype(tmp_path):
    from video4d import load_dit

    torch.manual_seed(0)
    ref = load_dit("tiny", init="random")
    url = str(tmp_path / "dit.safetensors")
    write_safetensors(url, ref.state_dict())
    model = load_dit("tiny", weights=url, dtype="bf16")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(torch.equal(p, ref.get_parameter(n).to(torch.bfloat16)) for n, p in model.named_parameters())
    assert read_state_dict(url).keys() == model.state_dict().keys()
