"""publish_to / publish_overwrite of every training entry point (fourd/train/publish.py, issue 20): an
existing target stops the run before any model is built; with overwrite it is replaced atomically."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from fourd.train.hydra_app import run_task
from fourd.train.publish import check_publish_target, publish_export


def _cfg(**kw):
    return OmegaConf.create({"publish_to": None, "publish_overwrite": False, "train": {"export": "full"}, **kw})


def test_existing_target_stops_the_run_before_the_task_is_built(tmp_path):
    shipped = tmp_path / "checkpoints" / "vggt.safetensors"
    shipped.parent.mkdir()
    shipped.write_bytes(b"shipped")
    cfg = _cfg(publish_to=str(shipped))
    with pytest.raises(FileExistsError, match="publish_overwrite=true"):
        run_task(cfg, lambda env: pytest.fail("the task was built"), str(tmp_path / "run"))
    assert shipped.read_bytes() == b"shipped"
    with pytest.raises(ValueError, match="train.export=full"):
        check_publish_target(_cfg(publish_to=str(tmp_path / "new.safetensors"), train={"export": "trainable"}))
    with pytest.raises(IsADirectoryError):
        check_publish_target(_cfg(publish_to=str(tmp_path)))
    assert check_publish_target(_cfg()) is None


def test_publish_copies_the_full_export_and_overwrites_only_when_asked(tmp_path):
    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    (export / "model.safetensors").write_bytes(b"trained")
    (export / "model_trainable.safetensors").write_bytes(b"part")
    exports = [str(export / "model_trainable.safetensors"), str(export / "model.safetensors")]
    target = tmp_path / "published" / "vae.safetensors"
    assert publish_export(_cfg(publish_to=str(target)), exports) == str(target)
    assert target.read_bytes() == b"trained"
    (export / "model.safetensors").write_bytes(b"retrained")
    with pytest.raises(FileExistsError):
        publish_export(_cfg(publish_to=str(target)), exports)
    publish_export(_cfg(publish_to=str(target), publish_overwrite=True), exports)
    assert target.read_bytes() == b"retrained"
    assert publish_export(_cfg(), exports) is None
