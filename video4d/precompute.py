"""Pre-encoding a training config's data: VAE latents and text contexts, sharded by rank, restartable.

``torchrun --nproc_per_node N launch/precompute.py [--config-name <training config>] <the run's
data overrides> data.encoded=<root>`` (:func:`precompute`): loads only the VAE (``vae.*``) and, when
``text.encoder`` is set, the text encoder; enumerates the scenes of ``data`` in training order
(procedural: the ``data.num_scenes`` seeds; mixture: every scene of every source); rank ``r`` of
``N`` takes scenes ``r, r + N, ...``; a scene's frames are decoded by the loader's workers
(``train.loader.workers``) and encoded on this rank's device, for every clip length of
``schedule.frames`` at the grid the run trains that scene at (its bucket). What is stored (the
superset of the run's draws: every chunked window, homography variant and trajectory frame) and
the layout: :mod:`video4d.encoded`. Every file is written atomically; a scene's part file comes
last, so a killed job (kill -9 included) rerun with the same command skips the finished scenes.
Rank 0 writes ``index.json`` once all parts exist; training with ``data.encoded=<root>`` reads it
without decoding a frame or loading the text encoder.
"""
from __future__ import annotations

import json
import logging
import posixpath
from typing import Any, Iterator, Optional

import fsspec
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from fourd.data.buckets import Grid
from fourd.data.format import CorruptSampleError
from fourd.data.procedural import ProceduralSource
from fourd.data.scene_io import open_scene
from fourd.data.transforms import ResizeCrop
from fourd.train.distributed import DistEnv, barrier, init_distributed
from fourd.train.schedule import StepSchedule
from fourd.weights import atomic_write_bytes
from video4d.data import build_source
from video4d.encoded import INDEX, VERSION, fingerprint, latent_id, module_hash
from video4d.text_context import save_context
from video4d.vae.latent_cache import LatentCache

__all__ = ["precompute"]

log = logging.getLogger(__name__)


class _Cells(Dataset):
    """Work item ``k`` -> ``(source, index, record, [(latent id, frames [n, F or 1, 3, H, W], F, constant)])``:
    the decoded, centre-cropped frames of every cell set of one scene (``constant``: each cell one
    frame held for ``F`` frames, a static trajectory), or a record with ``error``."""

    def __init__(self, source, items: list[tuple[str, int]], frames: list[int]):
        self.source, self.items, self.frames = source, items, frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[str, int, dict[str, Any], list]:
        name, i = self.items[k]
        if isinstance(self.source, ProceduralSource):
            return (name, i, *self._procedural(i))
        raw = self.source.sources[name]
        try:
            return (name, i, *self._scene(name, i, raw))
        except CorruptSampleError as e:
            log.warning("precompute: skipping corrupt scene %s (%s)", raw.scenes[i], e)
            return name, i, {"url": raw.scenes[i], "error": str(e)}, []

    def _procedural(self, i: int) -> tuple[dict[str, Any], list]:
        cells, clips = [], {}
        for F in self.frames:
            s = self.source.sample(i, F)
            grid = Grid(s["frames"].shape[0], F, *s["frames"].shape[-2:])
            clips[str(F)] = {"grid": list(grid), "windows": 1, "variants": 1}
            cells.append((latent_id("procedural", i, F), s["frames"], F, False))
        record = {"name": s["scene"], "url": "", "kind": s["kind"], "num_views": grid.views, "num_frames": max(self.frames),
                  "height": grid.height, "width": grid.width, "caption": s["caption"], "clips": clips}
        return record, cells

    def _grid(self, name: str, i: int, frames: int) -> Optional[Grid]:
        if self.source.mixture.grids is not None:
            return self.source.mixture.bucket_of(name, i, frames)
        return Grid(self.source.views, frames, self.source.height, self.source.width)

    def _scene(self, name: str, i: int, raw) -> tuple[dict[str, Any], list]:
        reader = open_scene(raw.scenes[i])
        meta = reader.meta
        record = {"name": meta.name, "url": raw.scenes[i], "kind": meta.kind, "num_views": meta.num_views, "num_frames": meta.num_frames,
                  "height": meta.height, "width": meta.width, "caption": meta.caption or "", "clips": {}}
        cells = []
        for F in self.frames:
            grid = self._grid(name, i, F)
            if grid is None or not raw.fits(meta, grid):
                continue  # the run never draws this scene at this clip length
            plan = ResizeCrop.plan((meta.height, meta.width), (grid.height, grid.width), "center")
            if raw.kind == "static":  # every trajectory frame, held for F frames
                trajectory = range(raw.trajectory_length(meta))
                images = torch.cat([reader.read_frames(t, [0]) if meta.num_frames == 1 else reader.read_frames(0, [t]) for t in trajectory])
                cells.append((latent_id(name, i, F), plan.frames(images)[:, None], F, True))
                record["clips"][str(F)] = {"grid": list(grid), "windows": 1, "variants": 1}
                continue
            windows, variants = raw.window_count(meta, F), raw.variants if raw.kind == "homography" else 1
            for c in range(windows):
                times = raw.chunk_times(F, c)
                if raw.kind == "dynamic":  # a multi-view scene: every view of the window
                    cells.append((latent_id(name, i, F, c), plan.frames(torch.stack([reader.read_frames(v, times) for v in range(meta.num_views)])), F, False))
                    continue
                clip = plan.frames(reader.read_frames(0, times))  # [F, 3, H, W]
                for k in range(variants):
                    cells.append((latent_id(name, i, F, c, k), raw.warp(clip, grid.views, raw.variant_rng(meta.name, c, k)), F, False))
            record["clips"][str(F)] = {"grid": list(grid), "windows": windows, "variants": variants}
        return record, cells


def _items(source) -> list[tuple[str, int]]:
    if isinstance(source, ProceduralSource):
        if source.num_scenes is None:
            raise ValueError("pre-encoding procedural data needs data.num_scenes (a finite scene set); it is null")
        return [("procedural", i) for i in range(source.num_scenes)]
    return [(name, i) for name in sorted(source.sources) for i in range(len(source.sources[name]))]


def _exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return fs.exists(path)


def _done(part_url: str, scene_url: str) -> bool:
    """Whether a scene's part file exists and is of that scene (a changed dataset root shifts the
    scene indices: such parts are encoded again)."""
    fs, path = fsspec.core.url_to_fs(part_url)
    try:
        return json.loads(fs.cat_file(path))["url"] == scene_url
    except FileNotFoundError:
        return False


def _encode(vae, frames: torch.Tensor, constant: bool, F: int, max_videos: Optional[int], device: torch.device) -> torch.Tensor:
    """Latents ``[n, T', z_dim, h, w]`` of ``n`` videos ``frames [n, F or 1, 3, H, W]`` (a 1-frame cell
    held for ``F`` frames when ``constant``), ``max_videos`` at a time."""
    step = max_videos or frames.shape[0]
    out = []
    for j in range(0, frames.shape[0], step):
        chunk = frames[j : j + step].to(device)
        if constant:
            chunk = chunk.expand(-1, F, -1, -1, -1)
        with torch.no_grad():
            out.append(vae.encode(chunk[None].float())[0].cpu())
    return torch.cat(out)


def precompute(cfg: DictConfig, env: Optional[DistEnv] = None) -> dict[str, int]:
    """Pre-encode ``cfg``'s data into ``data.encoded`` (module docstring). Returns ``{"scenes": all
    work items, "encoded": items this rank encoded now, "skipped": corrupt scenes in the index}``
    (``skipped`` on rank 0 only)."""
    env = env or init_distributed()
    root = cfg.data.get("encoded")
    if not root:
        raise ValueError("precompute needs data.encoded=<root URL> (where the latents, text contexts and index.json go)")
    root = root.rstrip("/")
    frames = sorted({int(f) for _, f in StepSchedule(OmegaConf.to_container(cfg.schedule.frames)).points})
    source = build_source(cfg.data, frames, raw=True)
    items = _items(source)
    part = lambda name, i: posixpath.join(root, "parts", name, f"{i:06d}.json")  # noqa: E731
    url = (lambda name, i: "") if isinstance(source, ProceduralSource) else (lambda name, i: source.sources[name].scenes[i])  # noqa: E731
    todo = [item for item in items[env.rank :: env.world_size] if not _done(part(*item), url(*item))]
    log.info("precompute rank %d/%d: %d of its %d scenes left", env.rank, env.world_size, len(todo), len(items[env.rank :: env.world_size]))
    from video4d import load_text_encoder, load_vae

    vae = load_vae(cfg.vae.config, weights=cfg.vae.weights, device=env.device).eval()
    encoder = None
    if cfg.text.get("encoder"):
        encoder = load_text_encoder(**OmegaConf.to_container(cfg.text.encoder, resolve=True), device=env.device).eval()
    store = LatentCache(posixpath.join(root, "latents"))
    workers = int(cfg.train.loader.workers) if "loader" in cfg.train else 0
    for name, i, record, cells in _iterate(_Cells(source, todo, frames), workers):
        for lid, clip, F, constant in cells:
            store.put(lid, _encode(vae, clip, constant, F, cfg.vae.max_videos, env.device))
        if encoder is not None and "error" not in record:
            with torch.no_grad():
                save_context(posixpath.join(root, "contexts", name, f"{i:06d}.safetensors"), encoder.encode([record["caption"]])[0].float().cpu())
        atomic_write_bytes(part(name, i), json.dumps(record).encode())
    barrier()
    skipped = 0
    if env.is_main:
        if encoder is not None:
            with torch.no_grad():
                save_context(posixpath.join(root, "contexts", "empty.safetensors"), encoder.encode([""])[0].float().cpu())
        missing = [part(*item) for item in items if not _exists(part(*item))]
        if missing:
            raise RuntimeError(f"precompute: {len(missing)} scenes have no part file (e.g. {missing[0]}): a rank failed; rerun the same command")
        records: dict[str, list] = {}
        for name, i in items:
            fs, path = fsspec.core.url_to_fs(part(name, i))
            records.setdefault(name, []).append(json.loads(fs.cat_file(path)))
        skipped = sum("error" in r for rs in records.values() for r in rs)
        doc = {"version": VERSION, "fingerprint": fingerprint(cfg.data), "vae": module_hash(vae), "frames": frames,
               "contexts": encoder is not None, "skipped": skipped, "sources": records}
        atomic_write_bytes(posixpath.join(root, INDEX), json.dumps(doc).encode())
        log.info("precompute: wrote %s (%d scenes, %d skipped as corrupt)", posixpath.join(root, INDEX), len(items), skipped)
    barrier()
    return {"scenes": len(items), "encoded": len(todo), "skipped": skipped}


def _iterate(dataset: _Cells, workers: int) -> Iterator[tuple[str, int, dict[str, Any], list]]:
    """The dataset's items in order, decoded by ``workers`` loader processes."""
    if not len(dataset):
        return iter(())
    return iter(DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                           generator=torch.Generator().manual_seed(0), prefetch_factor=2 if workers else None))
