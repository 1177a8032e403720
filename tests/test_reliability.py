"""Nothing lost, fail fast (issue 19) and the example's defaults (issue 20, items 1 and 4): output names
that cannot delete folders, partial folders of killed runs, every model-free check before any model
loads (inference, training, eval), one-line errors naming the file or key, text contexts that stay in
their root, the long-prompt warning, the trained-grid warning."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import infer4d.job as job
from fourd.train.hydra_app import compose_training
from fourd.formats import save_video
from fourd.preflight import ConfigError, argv_problem, check_config
from fourd.video_io import InputError
from fourd.weights import WeightsFileError, read_state_dict, write_safetensors
from infer4d.outputs import clean_stale_partials, committed, item_name

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dit.preset=tiny", "dit.weights=null", "vae.config=tiny", "vae.weights=null", "reconstructor.config=tiny-4d",
        "reconstructor.weights=null", "views=2", "frames=5", "height=32", "width=32", "sampler.steps=1",
        "sampler.progress=false", "device=cpu", "output.hash_weights=false"]


def _compose(name: str, *overrides: str):
    return compose_training(name, list(overrides))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


@pytest.fixture()
def tree(tmp_path):
    """data/frames/ (5 PNG frames + a sub-folder x/), a run folder holding earlier outputs and a sibling file."""
    frames = tmp_path / "data" / "frames"
    (frames / "x").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        iio.imwrite(frames / f"{i:03d}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    out = tmp_path / "runs" / "out"
    (out / "frames").mkdir(parents=True)
    (out / "frames" / "old.txt").write_text("the previous output of this item")
    (out / "other_item").mkdir()
    (out / "other_item" / "grid.png").write_bytes(b"another item's output")
    (tmp_path / "runs" / "sibling.txt").write_text("next to the output folder")
    return tmp_path, frames, out


@pytest.mark.parametrize("suffix", ["/.", "/x/..", "/"])
def test_an_odd_input_path_names_its_folder_and_overwrite_touches_nothing_else(tree, suffix):
    """Issue 19.1: ``<frames>/.`` deleted the run folder and ``<frames>/x/..`` its parent."""
    tmp, frames, out = tree
    before = _snapshot(tmp)
    cfg = _compose("infer", f"input.video={frames}{suffix}", "output.overwrite=true", "stages=generate", *TINY)
    assert job.run_inference(cfg, str(out)) == 0
    after = _snapshot(tmp)
    item = os.path.join("runs", "out", "frames")
    outside = lambda snap: {k: v for k, v in snap.items() if not k.startswith(item + os.sep) and k != item}  # noqa: E731
    new = set(outside(after)) - set(outside(before))
    assert new == {os.path.join("runs", "out", "batch_summary.json")}
    assert {k: after[k] for k in outside(before)} == outside(before)  # every earlier file and folder, byte for byte
    assert (out / "frames" / "grid.png").is_file() and not (out / "frames" / "old.txt").exists()
    assert sorted(os.listdir(out)) == ["batch_summary.json", "frames", "other_item"]  # no partial or replaced folder left


def test_names_are_plain_basenames_and_deletes_stay_inside_the_root(tmp_path, monkeypatch):
    assert item_name("clips/dog.mp4") == "dog" and item_name("s3://bucket/clips/cat_frames/") == "cat_frames"
    assert item_name("a/b/x/..") == "b" and item_name("a/b/.") == "b"
    monkeypatch.chdir(tmp_path)
    assert item_name(".") == tmp_path.name and item_name("..") == tmp_path.parent.name
    for bad in ("/", "s3://bucket/..", "clips/.hidden.mp4"):
        with pytest.raises(InputError, match="not a plain folder name"):
            item_name(bad)
    listing = tmp_path / "list.txt"
    listing.write_text("/\n")
    with pytest.raises(InputError, match="input.list item 0=/ gives the output name ''"):
        job.resolve_items(_compose("infer", f"input.list={listing}"))
    (tmp_path / "root").mkdir()
    for name in ("..", ".", "", "a/b"):
        with pytest.raises(InputError, match="not a direct child"):
            with committed(str(tmp_path / "root"), name, overwrite=True):
                pass
    os.symlink(tmp_path, tmp_path / "root" / "link")
    with pytest.raises(InputError, match="symbolic link"):
        with committed(str(tmp_path / "root"), "link", overwrite=True):
            pass
    assert sorted(os.listdir(tmp_path / "root")) == ["link"] and (tmp_path / "list.txt").exists()


def test_partial_folders_of_killed_runs_are_removed_and_unknown_ones_reported(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    import socket

    host = socket.gethostname()
    names = {"killed": f".clip.partial-{dead}@{host}-0123abcd", "elsewhere": ".clip.partial-1@another-host-4567abcd",
             "old_format": ".clip.partial-89abcdef", "alive": f".clip.partial-{os.getpid()}@{host}-deadbeef",
             "item": "clip", "newer": f".new.partial-{dead}@{host}-00000000"}
    for name in names.values():
        (tmp_path / name).mkdir()
    started = time.time()
    for key in ("killed", "elsewhere", "old_format", "alive", "item"):
        os.utime(tmp_path / names[key], (started - 3600, started - 3600))
    os.utime(tmp_path / names["newer"], (started + 1, started + 1))  # a partial of a run that started after this one
    with caplog.at_level(logging.INFO, logger="infer4d.outputs"):
        assert clean_stale_partials(str(tmp_path), started) == [names["killed"]]
    left = sorted(os.listdir(tmp_path))
    assert names["killed"] not in left and len(left) == len(names) - 1  # the newer one belongs to a run started after us
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "3 partial output folder(s)" in warning and names["elsewhere"] in warning and names["old_format"] in warning


# ------------------------------------------------------------------ fail fast: no model is loaded
@pytest.fixture()
def no_models(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the checks")

    monkeypatch.setattr(job, "Models", refuse)


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    cut = tmp_path / "cut.safetensors"
    write_safetensors(str(cut), {"w": torch.zeros(64)}, metadata={"dit_config": json.dumps({"preset": "tiny"})})
    cut.write_bytes(cut.read_bytes()[:-100])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    latin1 = tmp_path / "latin1"
    latin1.mkdir()
    save_video(str(latin1 / "clip.mp4"), torch.zeros(5, 32, 32, 3), fps=8)
    (latin1 / "clip.txt").write_bytes("un café".encode("latin-1"))
    return {"cut": cut, "junk": junk, "latin1": latin1 / "clip.mp4"}


INFER_CASES = [  # (overrides, the one line must contain)
    (["height=100000", "width=64"], r"need an estimated 5\d\d\.\d GiB \(resized input .*over limits.max_memory_gb=64"),
    (["mode=bogus"], r"mode='bogus' is not one of auto, monocular, both, row_only"),
    (["stages=bogus"], r"stages='bogus' is not one of"),
    (["views=0"], r"views=0: a 4D grid needs at least 2 views"),
    (["frames=8"], r"frames=8 is not 4k\+1"),
    (["input.video=/no/such/clip.mp4"], r"input video not found: /no/such/clip.mp4"),
    (["input.video={junk}"], r"junk.mp4"),
    (["input.video={latin1}"], r"caption file .*clip.txt is not UTF-8 text \(byte 0xe9 at offset 6\): save it as UTF-8"),
    (["mode=both", "input.video={latin1}", "prompt=x"], r"mode=both needs freeze-time images"),
    (["dit.weights={cut}"], r"dit.weights .*cut.safetensors is damaged or not a weights file \(\d+ bytes, its header describes \d+\)"),
    (["dit.preset=null", "dit.weights=null"], r"dit.preset=null and no weights"),
    (["reconstructor.config=bogus"], r"reconstructor.config: unknown reconstructor preset 'bogus'"),
    (["text_encoder=umt5-xxl"], r"config keys text_encoder.weights, text_encoder.tokenizer not set \(\?\?\? in the config\)"),
    (["text_encoder.tokenizer=/no/tokenizer"], r"text_encoder.tokenizer=/no/tokenizer is not a folder"),
    (["views=40", "frames=33"], r"views=40 x frames=33 \(9 latent frames\) do not fit the DiT: T=9 frames exceed t_max=8"),
    ([f"vae.config={{{{preset:tiny,z_dim:32,latents_mean:{[0] * 32},latents_std:{[1] * 32}}}}}".replace(" ", "")],  # braces doubled for .format
     r"dit.preset=tiny takes 16-channel latents but the VAE \(vae.config\) has z_dim 32: give the VAE the DiT was trained on"),
]


def test_inference_checks_everything_before_loading_a_model(tmp_path, no_models):
    """Issue 19.3-19.6 for inference: each bad value fails before any model loads, in one line naming the key or file."""
    files = _bad_files(tmp_path)
    for overrides, expected in INFER_CASES:
        overrides = [o.format(**files) for o in overrides]
        cfg = _compose("infer", *TINY[:6], "views=3", "height=32", "width=32", "device=cpu", *overrides)  # the example input unless overridden
        with pytest.raises(ValueError) as error:
            job.run_inference(cfg, str(tmp_path / "out"))
        message = str(error.value)
        assert "\n" not in message and __import__("re").search(expected, message), (overrides, message)
    assert not (tmp_path / "out").exists() or not any(p.name != "batch_summary.json" for p in (tmp_path / "out").iterdir())


def test_non_utf8_prompt_on_the_command_line_is_one_line(monkeypatch, capsys):
    """Issue 19.4: Hydra's lexer failed on it with a grammar exception. Every launch script calls
    prepare_launch (launch/eval.py: argv_problem) before Hydra parses the command line."""
    from fourd.train.hydra_app import prepare_launch

    monkeypatch.setattr(sys, "argv", ["launch/infer.py", "views=3", b"prompt=un caf\xe9".decode("utf-8", "surrogateescape")])
    with pytest.raises(SystemExit) as stop:
        prepare_launch()
    assert stop.value.code == ("infer: error: command-line argument 'prompt=un caf\\xe9' is not UTF-8 (byte 0xe9 at position 13): "
                               "re-encode it (e.g. `iconv -f latin1 -t utf-8`), or put the text in a UTF-8 file")
    assert argv_problem(["infer.py", "prompt=un café"]) is None


def test_training_and_eval_name_the_unset_key_and_the_damaged_file(tmp_path):
    """Issue 19.5: ``dataset root ??? is not a directory``; the disk config reported static_scenes instead."""
    with pytest.raises(ConfigError, match=r"^config keys recon_data.scenes, recon_data.eval_scenes not set .*recon_data.scenes=<value>$"):
        check_config(_compose("train_recon", "recon_data=disk"))
    with pytest.raises(ConfigError, match=r"config keys data.sources.objects_4d.scenes, .*static.scenes not set"):
        check_config(_compose("train_video4d", "data=mixture"))
    cut = _bad_files(tmp_path)["cut"]
    with pytest.raises(WeightsFileError, match=rf"^model.weights {cut} is damaged"):
        check_config(_compose("train_video4d", f"model.weights={cut}"))
    from eval.runner import run

    for overrides, expected in ((["benchmark=llff"], r"config key benchmark.root not set"),
                                (["benchmark=llff", f"benchmark.root={tmp_path}/nothing"], r"dataset root not found: .*nothing \(set the llff dataset's folder"),
                                ([f"recon.weights={cut}"], r"recon.weights .*cut.safetensors is damaged"),
                                (["dit.preset=bogus"], r"dit.preset=bogus: unknown DiT preset 'bogus'")):
        with pytest.raises((ValueError, FileNotFoundError), match=expected):
            run(_compose("eval", *overrides), str(tmp_path / "eval"))
    assert not (tmp_path / "eval").exists()
    proc = subprocess.run([sys.executable, str(ROOT / "launch" / "train_recon.py"), "recon_data=disk", f"hydra.run.dir={tmp_path}/run"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("train_recon: error: ConfigError: config keys recon_data.scenes, recon_data.eval_scenes not set")
    assert "Traceback" in (tmp_path / "run" / "train_recon_rank0.log").read_text()  # the traceback is in the run's log, not on the terminal


def test_a_damaged_weights_file_is_named_when_read():
    """Issue 19.4: ``SafetensorError: incomplete metadata`` named no file."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.safetensors")
        write_safetensors(path, {"w": torch.zeros(64)})
        open(path, "r+b").truncate(os.path.getsize(path) // 2)
        with pytest.raises(WeightsFileError, match=rf"^DiT weights file {path} is damaged or not a weights file \(.*\): copy it again"):
            read_state_dict(path, what="DiT weights file")


def test_a_context_name_cannot_leave_context_root(tmp_path):
    """Issue 19.6: a scene.json name ``../outside/x`` read a file outside context_root."""
    from video4d.text_context import CaptionContexts, save_context

    (tmp_path / "root" / "sub").mkdir(parents=True)
    save_context(str(tmp_path / "root" / "sub" / "a.safetensors"), torch.ones(2, 4))
    save_context(str(tmp_path / "outside.safetensors"), torch.ones(3, 4))
    contexts = CaptionContexts(4, 8, context_root=str(tmp_path / "root"))
    assert contexts.embedding({"scene": "sub/a"}).shape == (2, 4)
    for name in ("../outside", "/etc/passwd", "sub/../../outside", ""):
        with pytest.raises(ValueError, match="leaves text.context_root"):
            contexts.embedding({"scene": name})


def test_the_long_prompt_warning_reports_the_real_token_count(caplog):
    """Issue 19.6: the warning counted tokens after the encoder had already cut the prompt."""
    from video4d import load_text_encoder
    from video4d.pipeline import encode_text

    encoder = load_text_encoder("tiny")
    prompt = " ".join(["red"] * 100)  # 100 words + </s>; the tiny encoder reads 64, a tiny DiT 8
    with caplog.at_level(logging.WARNING, logger="video4d.pipeline"):
        context, _ = encode_text(encoder, [prompt], "", 8)
    assert context.shape == (1, 8, 32)
    assert [r.getMessage() for r in caplog.records] == [
        "a prompt has 101 tokens; the text encoder and the DiT read the first 8 (DiT text_len=8), the rest is dropped"]


# ------------------------------------------------------------------ issue 20: the example's defaults, the trained grid
def test_a_user_video_gets_none_of_the_example_and_runs_the_readme_line(tmp_path, caplog):
    """Issue 20.1: ``input.video=clip.mp4 ... views=4 frames=17`` picked up the example's freeze-time
    images (and failed); now it is monocular, and the grid the weights were not trained on is warned about (20.4)."""
    (example,) = job.resolve_items(_compose("infer"))
    assert (example.name, example.video, example.freeze_time) == ("heldout_scene", "examples/heldout_scene/video", "examples/heldout_scene/freeze_time")
    clip = tmp_path / "clip.mp4"
    save_video(str(clip), torch.rand(17, 32, 32, 3), fps=8)
    dit = tmp_path / "dit.safetensors"
    from video4d import load_dit
    from video4d.grid import TRAINED_GRID_KEY

    torch.manual_seed(0)
    write_safetensors(str(dit), load_dit("tiny").state_dict(), metadata={
        "dit_config": json.dumps({"preset": "tiny"}), TRAINED_GRID_KEY: json.dumps({"views": 3, "frames": 5, "height": 64, "width": 64})})
    overrides = [o for o in TINY if not o.startswith(("views", "frames", "dit."))]
    cfg = _compose("infer", f"input.video={clip}", "prompt=a dog runs on a beach", "views=4", "frames=17", "stages=generate",
                   "dit.preset=null", f"dit.weights={dit}", *overrides)
    with caplog.at_level(logging.WARNING, logger="infer4d.job"):
        assert job.run_inference(cfg, str(tmp_path / "out")) == 0
    summary = json.loads((tmp_path / "out" / "clip" / "summary.json").read_text())
    assert summary["item"]["freeze_time"] is None and summary["grid"]["views"] == 4 and summary["grid"]["frames"] == 17
    assert "sample_column" in summary["stages"]  # monocular: the freeze-time column was generated
    warning = f"the DiT weights {dit} were trained on 3 views x 5 frames at 64x64; this run asks for 4 views x 17 frames at 32x32"
    assert [r.getMessage()[: len(warning)] for r in caplog.records if r.levelno == logging.WARNING] == [warning]
    assert summary["warnings"][0].startswith(warning)
    grid = iio.imread(tmp_path / "out" / "clip" / "grid.png")
    assert grid.shape == (4 * 34 + 2, 17 * 34 + 2, 3)  # every frame of every view (20.6)
    row_only = _compose("infer", f"input.video={clip}", "mode=row_only", "views=4", "frames=17", *overrides)
    job._check_item(row_only, job.resolve_items(row_only)[0], job.check_models(row_only))  # row_only takes a user video as is


def test_a_scene_caption_that_is_not_utf8_names_its_file(tmp_path):
    """Issue 19.4 for training and eval data: a Latin-1 caption in scene.json raised a bare UnicodeDecodeError."""
    from fourd.data import Scene, read_scene, write_scene
    from fourd.data.format import SceneFormatError

    write_scene(Scene(name="s", kind="dynamic", frames=torch.zeros(1, 1, 3, 16, 16), fps=8.0, caption="un cafe"), str(tmp_path / "s"))
    meta = tmp_path / "s" / "scene.json"
    meta.write_bytes(meta.read_bytes().replace(b"un cafe", "un café".encode("latin-1")))
    with pytest.raises(SceneFormatError, match=rf"^scene s: {meta} is not UTF-8 \(byte 0xe9 at offset \d+\): save it as UTF-8$"):
        read_scene(str(tmp_path / "s"))
