"""The inference job behind ``launch/infer.py``: inputs -> grid (video4d.pipeline) -> Gaussians
(recon.inference) -> files, for one input or a batch, sharded across ranks under torchrun/deepspeed.

Per input ``<name>`` the files go to ``<out_root>/<name>/`` (``configs/infer.yaml`` lists them):
``grid.png``, ``views/view_{v}.mp4``, ``scene/`` (the decoded grid in the scene format of
docs/data_format.md), ``gaussians_t{t:04d}.ply``, ``cameras.json``, ``novel_views.mp4``,
``novel_times.mp4`` and ``summary.json`` (settings, seconds and peak memory per stage, sha256 of
the weight files). They are written into a hidden partial folder and renamed to ``<name>`` only when
everything succeeded; a failure removes the partial folder, so a folder named like an input is always
complete, and nothing outside ``<out_root>/<name>`` is ever deleted or renamed (:mod:`infer4d.outputs`).
A batch reports each failing item in one line, skips it, and ends with a table (also ``batch_summary.json``).

Before any model is loaded, every check that needs none runs (:mod:`infer4d.checks`): settings, unset
keys, weights files and their headers, model configs, the grid against the DiT, and each input (it
exists and decodes, its mode, the estimated memory); a grid other than the one the DiT weights were
trained on is warned about once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import posixpath
import time
from dataclasses import dataclass
from typing import Any, Optional

import fsspec
import torch
from omegaconf import DictConfig, OmegaConf

from fourd.stages import StageRecorder
from fourd.video_io import VIDEO_SUFFIXES, InputError, read_images, read_video
from infer4d.checks import ModelConfigs, check_memory, check_mode, check_models, check_settings, trained_grid_warning
from infer4d.outputs import check_output, clean_stale_partials, committed, item_name
from video4d.pipeline import GenerationSettings, encode_text, frames_to_image, generate

__all__ = ["Item", "resolve_items", "run_inference", "DTYPES"]

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Item:
    """One input: ``video`` URL (with ``stages=reconstruct``: a grid in the scene format), optional
    ``freeze_time`` image folder, ``prompt`` (None: read a caption next to the video, else "")."""

    name: str
    video: str
    freeze_time: Optional[str] = None
    prompt: Optional[str] = None


def _text(fs, path: str, what: str, fix: str) -> str:
    """A UTF-8 text file; anything else raises naming it."""
    data = fs.cat_file(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}): {fix}") from None


def resolve_items(cfg: DictConfig) -> list[Item]:
    """The inputs of ``cfg.input``: ``input.list`` (a text file, one ``video [| freeze_time [| prompt]]``
    per line, ``#`` comments; or a folder whose videos / sub-folders are the items), the single
    ``input.video`` / ``input.freeze_time`` / ``prompt``, or, with neither, the bundled ``example``
    (its ``video`` and ``freeze_time`` folders: the example's defaults apply only to the example)."""
    node = cfg.input
    if node.list is None:
        if node.video is None:
            if cfg.example is None or node.freeze_time is not None:
                raise InputError("no input video: set input.video=<video or folder of frames> (or input.list=<file or folder> for a batch)")
            example = cfg.example.rstrip("/")
            return [Item(item_name(example, "example"), f"{example}/video", f"{example}/freeze_time", cfg.prompt)]
        return [Item(item_name(node.video), node.video, node.freeze_time, cfg.prompt)]
    fs, path = fsspec.core.url_to_fs(node.list)
    if not fs.exists(path):
        raise InputError(f"input.list not found: {node.list}")
    if fs.isdir(path):
        urls = sorted(p for p in fs.ls(path, detail=False) if fs.isdir(p) or p.lower().endswith(VIDEO_SUFFIXES))
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        rows = [[u if protocol == "file" else f"{protocol}://{u}"] for u in urls]
    else:
        lines = _text(fs, path, "input.list", "save it as UTF-8").splitlines()
        rows = [[f.strip() for f in line.split("|")] for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise InputError(f"input.list {node.list} holds no inputs")
    items = []
    for i, row in enumerate(rows):
        freeze = row[1] if len(row) > 1 and row[1] else None
        prompt = row[2] if len(row) > 2 else cfg.prompt
        items.append(Item(f"{i:04d}_{item_name(row[0], f'input.list item {i}')}", row[0], freeze, prompt))
    return items


def _caption(item: Item) -> str:
    """The item's prompt, else ``<stem>.txt`` or ``caption.txt`` next to (or inside) the video, else ""."""
    if item.prompt is not None:
        return item.prompt
    fs, path = fsspec.core.url_to_fs(item.video)
    path = path.rstrip("/")
    folder = path if fs.isdir(path) else posixpath.dirname(path)
    for candidate in (posixpath.splitext(path)[0] + ".txt", posixpath.join(folder, "caption.txt")):
        if fs.isfile(candidate):
            return _text(fs, candidate, "caption file", "save it as UTF-8, or give prompt=...").strip()
    return ""


def _read_inputs(cfg: DictConfig, item: Item, size: Optional[tuple[int, int]]) -> tuple[torch.Tensor, Optional[torch.Tensor], str]:
    """The item's video ``[F, 3, H, W]``, freeze-time images ``[V, 3, H, W]`` (or None) and prompt;
    ``size`` None keeps the frames as stored (the pre-check reads them so)."""
    video = read_video(item.video, cfg.frames, size, cfg.input.stride)
    freeze = None if item.freeze_time is None else read_images(item.freeze_time, cfg.views, size)
    return video, freeze, _caption(item)


def _check_item(cfg: DictConfig, item: Item, configs: ModelConfigs) -> None:
    """What can fail for this input, without a model: it exists and decodes, its mode fits, it fits in memory."""
    if cfg.stages == "reconstruct":
        _read_grid(item)
        return
    video, freeze, _ = _read_inputs(cfg, item, None)
    check_mode(cfg, freeze is not None, item.video)
    check_memory(cfg, tuple(video.shape[-2:]), configs.vae.dim, item.video)


def _read_grid(item: Item) -> torch.Tensor:
    from fourd.data import read_scene

    try:
        return read_scene(item.video, with_depth=False, with_masks=False).frames
    except (ValueError, RuntimeError, OSError) as e:
        raise InputError(f"cannot read the grid {item.video} for stages=reconstruct ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _sha256(url: str) -> str:
    """sha256 of a file, or of the sorted files of a folder (name + bytes), read through fsspec."""
    fs, path = fsspec.core.url_to_fs(url)
    files = sorted(fs.find(path)) if fs.isdir(path) else [path]
    digest = hashlib.sha256()
    for f in files:
        if len(files) > 1:
            digest.update(posixpath.relpath(f, path).encode())
        with fs.open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


class Models:
    """The models a run needs (None where a stage does not run), loaded once, and their weight hashes."""

    def __init__(self, cfg: DictConfig, device: torch.device, recorder: StageRecorder):
        from video4d import load_dit, load_text_encoder, load_vae

        dtype = DTYPES[cfg.dtype]
        generate_stage, recon_stage = cfg.stages in ("all", "generate"), cfg.stages in ("all", "reconstruct")
        self.dit = self.vae = self.text_encoder = self.reconstructor = None
        weights = {}
        with recorder.stage("load_models"):
            if generate_stage:
                torch.manual_seed(cfg.dit.init_seed)
                config = None if cfg.dit.preset is None else {"preset": cfg.dit.preset, "attention_backend": cfg.dit.attention_backend}
                init = "random" if cfg.dit.weights is None else "official"
                self.dit = load_dit(config, weights=cfg.dit.weights, init=init, device="cpu", dtype=dtype).eval()
                torch.manual_seed(cfg.vae.init_seed)
                self.vae = load_vae(cfg.vae.config, weights=cfg.vae.weights, device="cpu", dtype=dtype)
                weights |= {"dit": cfg.dit.weights, "vae": cfg.vae.weights}
                if cfg.context_file is None:
                    te = cfg.text_encoder
                    self.text_encoder = load_text_encoder(te.config, weights=te.weights, tokenizer=te.tokenizer, device="cpu", dtype=te.dtype)
                    weights["text_encoder"] = te.weights
                    if te.tokenizer is not None:
                        weights["tokenizer"] = te.tokenizer
            if recon_stage:
                from recon.model import load_reconstructor

                torch.manual_seed(cfg.reconstructor.init_seed)
                self.reconstructor = load_reconstructor(cfg.reconstructor.config, weights=cfg.reconstructor.weights, device="cpu", dtype=dtype).eval()
                weights["reconstructor"] = cfg.reconstructor.weights
        recorder.place(self.dit, self.vae, self.text_encoder, self.reconstructor)
        self.weights = weights  # name -> URL, None = seeded random init
        self.hashes: dict[str, str] = {}
        files = {k: v for k, v in weights.items() if v is not None}
        if cfg.output.hash_weights and files:
            with recorder.stage("hash_weights"):
                self.hashes = {k: _sha256(v) for k, v in files.items()}


def _contexts(cfg: DictConfig, models: Models, prompt: str, device: torch.device) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Prompt context ``[1, text_len, D]`` and CFG negative ``[1, text_len, D]`` (None if not given) on ``device``."""
    from video4d.text_context import load_context, pad_contexts

    text_len, text_dim = models.dit.config.text_len, models.dit.config.text_dim
    if cfg.context_file is not None:
        context = pad_contexts([load_context(cfg.context_file, text_dim).float()], text_len)
        negative = None
        if cfg.negative_context_file is not None:
            negative = pad_contexts([load_context(cfg.negative_context_file, text_dim).float()], text_len)
        return context.to(device), None if negative is None else negative.to(device)
    context, negative = encode_text(models.text_encoder, [prompt], cfg.negative_prompt, text_len)
    return context.to(device), negative.to(device)


def _settings(cfg: DictConfig, item: Item, has_freeze: bool) -> GenerationSettings:
    s = cfg.sampler
    return GenerationSettings(mode=check_mode(cfg, has_freeze, item.video), views=cfg.views, steps=s.steps, shift=s.shift, guidance=s.guidance,
                              guidance_single=s.guidance_single, seed=s.seed, decode_chunk=cfg.vae.decode_chunk,
                              max_videos=cfg.vae.max_videos, progress=s.progress)


def _sample_item(cfg: DictConfig, models: Models, item: Item, device: torch.device, recorder: StageRecorder) -> tuple[Optional[torch.Tensor], str]:
    """Read the item and generate its grid: (frames ``[V, F, 3, H, W]``, None on a sequence-parallel rank other than its group's first; prompt)."""
    with recorder.stage("read_input"):
        video, freeze, prompt = _read_inputs(cfg, item, (cfg.height, cfg.width))
        video, freeze = video[None], None if freeze is None else freeze[None]
    settings = _settings(cfg, item, freeze is not None)
    with recorder.stage("text_encode", models.text_encoder):
        context, negative = _contexts(cfg, models, prompt, device)
    frames = generate(models.dit, models.vae, video, context, settings, negative, freeze, recorder)["frames"]
    return (None if frames is None else frames[0]), prompt


def _generate_item(cfg: DictConfig, models: Models, item: Item, out: str, device: torch.device, recorder: StageRecorder) -> torch.Tensor:
    """Read the item, generate its grid and write grid.png, views/*.mp4, scene/; returns frames ``[V, F, 3, H, W]``."""
    from fourd.data import Scene, write_scene
    from fourd.formats import save_video

    frames, prompt = _sample_item(cfg, models, item, device, recorder)
    with recorder.stage("write_grid"):
        import imageio.v3 as iio

        iio.imwrite(os.path.join(out, "grid.png"), frames_to_image(frames[:, :: cfg.output.grid_stride]).numpy())  # rows = views
        for v in range(frames.shape[0]):
            save_video(os.path.join(out, "views", f"view_{v}.mp4"), frames[v].permute(0, 2, 3, 1), cfg.output.fps)
        write_scene(Scene(name=item.name, kind="dynamic", frames=frames, fps=cfg.output.fps, caption=prompt), os.path.join(out, "scene"))
    return frames


def _reconstruct_item(cfg: DictConfig, models: Models, frames: torch.Tensor, out: str, recorder: StageRecorder) -> int:
    """Reconstruct the chosen timesteps of ``frames [V, F, 3, H, W]`` and export PLYs, cameras.json and mp4s; returns T."""
    from recon.inference import export_grid

    r = cfg.reconstructor
    with recorder.stage("reconstruct", models.reconstructor):
        return export_grid(models.reconstructor, frames, out, r.frame_stride, (r.height, r.width), r.path_frames, r.time,
                           cfg.output.fps, list(r.background))


def _run_item(cfg: DictConfig, models: Models, item: Item, root: str, device: torch.device, load: StageRecorder,
              warnings: list[str]) -> dict[str, Any]:
    recorder = StageRecorder(device, cfg.offload)
    with committed(root, item.name, cfg.output.overwrite) as out:
        if cfg.stages == "reconstruct":
            with recorder.stage("read_input"):
                frames = _read_grid(item)
        else:
            frames = _generate_item(cfg, models, item, out, device, recorder)
        timesteps = _reconstruct_item(cfg, models, frames, out, recorder) if cfg.stages != "generate" else 0
        summary = {
            "item": {"name": item.name, "video": item.video, "freeze_time": item.freeze_time, "prompt": item.prompt},
            "grid": {"views": frames.shape[0], "frames": frames.shape[1], "height": frames.shape[-2], "width": frames.shape[-1],
                     "reconstructed_timesteps": timesteps},
            "stages": {**load.stages, **recorder.stages},  # model loading is shared by all items of a run
            "item_seconds": sum(r["seconds"] for r in recorder.stages.values()),
            "weights": {k: {"url": v, "sha256": models.hashes.get(k)} if v else {"url": None, "init": "seeded random (tiny demo)"}
                        for k, v in models.weights.items()},
            "settings": OmegaConf.to_container(cfg, resolve=True),
            "device": str(device), "torch": torch.__version__, "warnings": warnings,
        }
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    log.info("%s: done\n%s", item.name, recorder.table())
    return summary


def _join_sequence_parallel(size: int, models: Models) -> None:
    """Split the DiT's tokens over sequence-parallel groups of ``size`` ranks (DeepSpeed-Ulysses)."""
    from fourd.train.distributed import sequence_parallel_groups

    models.dit.set_sequence_parallel(sequence_parallel_groups(size).get_sequence_parallel_group())


def _follow_item(cfg: DictConfig, models: Models, item: Item, root: str, device: torch.device) -> None:
    """What a sequence-parallel rank other than its group's first does with an item: the first rank's
    reads and sampling calls (so that the collectives match), no files. Items the first rank refuses
    before sampling (an existing output, an unreadable input) are skipped here the same way."""
    try:
        check_output(root, item.name, cfg.output.overwrite)  # the first rank's check in committed()
    except InputError:
        return
    try:
        _sample_item(cfg, models, item, device, StageRecorder(device, cfg.offload))
    except Exception:  # the group's first rank reports it
        if cfg.input.list is None:
            raise
        log.debug("%s failed on this sequence-parallel rank", item.name, exc_info=True)


def run_inference(cfg: DictConfig, out_root: str) -> int:
    """Run every input of ``cfg`` (``configs/infer.yaml``) that belongs to this rank; returns the
    number of failed items (each reported in one line; a table of all items is logged at the end).
    A single input (no ``input.list``) that fails raises its error instead (nothing of it is left).
    Everything that needs no model is checked before any model is loaded (module docstring)."""
    from fourd.train.distributed import dist_env
    from tqdm.auto import tqdm

    started = time.time()
    check_settings(cfg)
    env = dataclasses.replace(dist_env(), sequence_parallel=cfg.sequence_parallel)
    device = env.device if cfg.device == "auto" else torch.device(cfg.device)
    items = resolve_items(cfg)[env.dp_rank :: env.dp_size]  # a sequence-parallel group shares its items
    configs = check_models(cfg)
    if env.sequence_parallel > 1 and configs.dit is not None:  # before any model loads: N divides the DiT's heads
        from video4d.model.sequence_parallel import check_sequence_parallel

        check_sequence_parallel(env.sequence_parallel, configs.dit.num_heads)
    os.makedirs(out_root, exist_ok=True)
    if env.is_main:
        clean_stale_partials(out_root, started)
    single = cfg.input.list is None
    failures: dict[str, str] = {}
    for item in items:
        try:
            _check_item(cfg, item, configs)
        except Exception as e:  # a batch reports and skips a bad input before any model loads
            if single:
                raise
            failures[item.name] = _failure(item, e)
    warning = trained_grid_warning(cfg, configs.dit_metadata) if cfg.stages != "reconstruct" else None
    if warning:
        log.warning(warning)
    load = StageRecorder(device, cfg.offload)
    follower = env.sp_rank != 0  # a sequence-parallel rank that only helps to sample: no reconstructor, no files
    if follower and cfg.stages == "reconstruct":
        return 0
    if len(failures) == len(items):
        models = None
    else:
        models = Models(OmegaConf.merge(cfg, {"stages": "generate", "output": {"hash_weights": False}}) if follower else cfg, device, load)
        if env.sequence_parallel > 1 and cfg.stages != "reconstruct":
            _join_sequence_parallel(env.sequence_parallel, models)
    if follower:
        for item in items:
            if item.name not in failures:  # the same items as the group's first rank, whose checks ran here too
                _follow_item(cfg, models, item, out_root, device)
        return 0
    rows = []
    for item in tqdm(items, desc="inputs", disable=len(items) < 2):
        if item.name in failures:
            rows.append({"item": item.name, "status": "failed", "seconds": None, "detail": failures[item.name]})
            continue
        try:
            summary = _run_item(cfg, models, item, out_root, device, load, [warning] if warning else [])
            rows.append({"item": item.name, "status": "ok", "seconds": round(summary["item_seconds"], 2), "detail": os.path.join(out_root, item.name)})
        except Exception as e:  # a batch reports and skips a failing item; a single input fails the run
            if single:
                raise
            rows.append({"item": item.name, "status": "failed", "seconds": None, "detail": _failure(item, e)})
    failed = sum(r["status"] != "ok" for r in rows)
    name = "batch_summary.json" if env.dp_size == 1 else f"batch_summary_rank{env.dp_rank}.json"
    with open(os.path.join(out_root, name), "w") as f:
        json.dump({"rank": env.dp_rank, "world_size": env.dp_size, "items": rows}, f, indent=1)
    table = "\n".join(f"{r['item']:<32} {r['status']:<7} {r['seconds'] if r['seconds'] is not None else '-':>8}  {r['detail']}" for r in rows)
    log.info("rank %d: %d of %d inputs ok\n%s", env.rank, len(rows) - failed, len(rows), table)
    return failed


def _failure(item: Item, error: Exception) -> str:
    """``Type: first line`` of a failing item's error, logged in one line (traceback at debug level)."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    log.error("%s FAILED: %s: %s", item.name, type(error).__name__, message)
    log.debug("traceback of %s", item.name, exc_info=True)
    return f"{type(error).__name__}: {message}"
