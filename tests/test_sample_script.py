"""launch/sample_video4d.py end to end: the Hydra entry point, references from a file, the VAE path."""
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from launch.sample_video4d import generate


ROOT = Path(__file__).resolve().parents[1]


def _grid_size(V, T, H, W, padding=2):
    """grid.png shape for V x T cells of H x W pixels with the default 2-pixel padding."""
    return (V * (H + padding) + padding, T * (W + padding) + padding, 3)


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("sample_video4d", overrides=["sampler.progress=false", *overrides])


def test_script_runs_with_no_arguments_and_writes_image_and_latents(tmp_path):
    result = subprocess.run(
        [sys.executable, "launch/sample_video4d.py", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert str(tmp_path / "grid.png") in result.stdout
    image = iio.imread(tmp_path / "grid.png")
    assert image.shape == _grid_size(3, 4, 64, 64) and image.dtype.name == "uint8"
    latents = load_file(str(tmp_path / "latents.safetensors"))["latents"]
    assert latents.shape == (3, 4, 16, 8, 8) and torch.isfinite(latents).all()


def test_references_from_file_are_reproduced_exactly_and_seed_is_deterministic(tmp_path):
    first = generate(_cfg("grid.views=2", "grid.times=3", "grid.height=4", "grid.width=6", "display.scale=2", "sampler.steps=2"), tmp_path / "a")
    image = iio.imread(first["image"])
    assert image.shape == _grid_size(2, 3, 4 * 2, 6 * 2)
    source = load_file(str(first["latents"]))["latents"]

    overrides = ["grid.views=2", "grid.times=3", "grid.height=4", "grid.width=6", "sampler.steps=2", "sampler.seed=5", f"references.file={first['latents']}", "references.view=1", "references.time=2"]
    out = [load_file(str(generate(_cfg(*overrides), tmp_path / name)["latents"])) for name in ("b", "c")]
    cells = out[0]["reference_cells"].bool()
    assert cells.sum() == 3 + 2 - 1 and cells[1].all() and cells[:, 2].all()
    assert torch.equal(out[0]["latents"][cells], source[cells])
    assert torch.equal(out[0]["latents"], out[1]["latents"])


def test_bad_references_and_missing_weights_give_clear_errors(tmp_path):
    first = generate(_cfg("sampler.steps=1"), tmp_path / "a")
    with pytest.raises(ValueError, match="both null"):
        generate(_cfg(f"references.file={first['latents']}", "references.view=null", "references.time=null"), tmp_path / "b")
    with pytest.raises(ValueError, match="the grid is"):
        generate(_cfg(f"references.file={first['latents']}", "grid.views=2"), tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="no_such_vae.safetensors"):
        generate(_cfg("sampler.steps=1", f"vae.weights={tmp_path / 'no_such_vae.safetensors'}"), tmp_path / "d")


def test_vae_decoding_path_with_tiny_vae_weights(tmp_path):
    from fourd.weights import write_safetensors
    from video4d import load_vae

    weights = tmp_path / "tiny_vae.safetensors"
    write_safetensors(str(weights), load_vae("tiny").state_dict())
    paths = generate(_cfg("grid.views=2", "grid.times=2", "grid.height=2", "grid.width=2", "sampler.steps=1", "vae.config=tiny", f"vae.weights={weights}"), tmp_path / "out")
    image = iio.imread(paths["image"])
    # 2 latent frames decode to 5 frames; stride 4 shows frames 0 and 4: one column per latent frame
    assert image.shape == _grid_size(2, 2, 16, 16)


def test_grid_image_puts_views_in_rows_and_times_in_columns():
    from launch.sample_video4d import frames_to_image

    V, T, H, W = 2, 3, 4, 5
    value = torch.arange(V * T, dtype=torch.float32).reshape(V, T, 1, 1, 1) / 10
    image = frames_to_image(value.expand(V, T, 3, H, W), padding=2)
    assert tuple(image.shape) == _grid_size(V, T, H, W)
    for v in range(V):
        for t in range(T):
            y, x = 2 + v * (H + 2) + H // 2, 2 + t * (W + 2) + W // 2
            assert int(image[y, x, 0]) == round((v * T + t) / 10 * 255)
    assert int(image[0, 0, 0]) == 255



def test_cfg_without_an_encoded_negative_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs context.negative_file"):
        generate(_cfg("sampler.guidance=3.0"), tmp_path)
