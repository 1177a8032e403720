"""Converters from the paper's training datasets to the scene format (docs/data_format.md,
"Bringing your own data"): one :func:`convert` call per dataset root.

=================  =================================================================  =======
``dataset``        reads                                                              writes
=================  =================================================================  =======
``realestate10k``  RealEstate10K / ACID camera ``.txt`` + frames, or pixelSplat chunks  static
``dl3dv``          nerfstudio ``transforms.json`` scenes (DL3DV)                       static
``colmap``         COLMAP sparse models (MVImgNet; any COLMAP capture)                 static
``kubric``         Kubric worker output (MOVi metadata.json + rgba/depth), per camera  dynamic
``objaverse``      per-view render folders + ``cameras.json``                          dynamic
=================  =================================================================  =======

A folder of plain videos with ``<video>.txt`` captions needs no conversion: the homography source
reads it directly. Cameras come out as OpenCV camera-from-world in the dataset's own world frame
with pixel intrinsics of the written frames (see :mod:`fourd.data.readers.geometry`).
"""
from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Optional

import fsspec

from fourd.data.format import CorruptSampleError, SceneFormatError
from fourd.data.readers.colmap import Colmap
from fourd.data.readers.common import BrokenItem, Reader, ReaderError, SceneWriter
from fourd.data.readers.kubric import Kubric
from fourd.data.readers.nerfstudio import Nerfstudio
from fourd.data.readers.objaverse import ObjaverseRenders
from fourd.data.readers.realestate10k import RealEstate10K

__all__ = ["READERS", "ConvertReport", "ReaderError", "BrokenItem", "convert", "load_captions"]

logger = logging.getLogger(__name__)

READERS: dict[str, type[Reader]] = {cls.name: cls for cls in (RealEstate10K, Nerfstudio, Colmap, Kubric, ObjaverseRenders)}


@dataclass
class ConvertReport:
    """What one :func:`convert` run did: scenes ``converted`` (names), ``existing`` (complete already,
    left as they were), ``skipped`` (name -> reason) and ``frames_dropped`` (single frames left out of
    converted scenes because they were missing or unreadable)."""

    dataset: str
    root: str
    out: str
    converted: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    frames_dropped: int = 0

    def summary(self) -> str:
        """One line for the console."""
        return (f"{self.dataset}: {len(self.converted)} scenes converted, {len(self.existing)} already there, "
                f"{len(self.skipped)} skipped, {self.frames_dropped} frames dropped -> {self.out}")

    def to_json(self) -> str:
        """The report as JSON text."""
        return json.dumps(asdict(self), indent=1)


def load_captions(url: str) -> dict[str, str]:
    """Captions by scene name from a ``.json`` object ``{name: caption}`` or a ``.csv`` whose rows are
    ``name,caption`` (a header row ``name,caption`` or none, e.g. Cap3D's Objaverse captions)."""
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.isfile(path):
        raise ReaderError(f"captions file {url} not found (expected a .json {{name: caption}} or a .csv of name,caption rows)")
    text = fs.cat_file(path).decode("utf-8")
    if path.lower().endswith(".json"):
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ReaderError(f"captions file {url}: expected a JSON object {{name: caption}}")
        return {str(k): str(v) for k, v in doc.items()}
    if path.lower().endswith(".csv"):
        rows = [r for r in csv.reader(io.StringIO(text)) if len(r) >= 2]
        if rows and [c.strip().lower() for c in rows[0][:2]] == ["name", "caption"]:
            rows = rows[1:]
        return {r[0].strip(): r[1].strip() for r in rows}
    raise ReaderError(f"captions file {url}: use a .json or .csv file")


def _remove_partial(fs, out_root: str, name: str) -> None:
    """Delete the partly written scene ``<out_root>/<name>`` of a failed conversion (only that folder)."""
    target = posixpath.join(out_root, name)
    if name and "/" not in name and posixpath.dirname(target) == out_root and fs.exists(target):
        fs.rm(target, recursive=True)


def convert(dataset: str, root: str, out: str, height: Optional[int] = None, width: Optional[int] = None,
            rgb_format: Optional[str] = None, captions: Optional[str] = None, overwrite: bool = False, shard: int = 0,
            num_shards: int = 1, limit: Optional[int] = None, **options) -> ConvertReport:
    """Convert the ``dataset`` at ``root`` into scenes ``<out>/<name>/`` (docs/data_format.md).

    ``height``/``width``: output frame size (resize to cover + centre crop; both or neither: None
    keeps each scene's own size). ``rgb_format``: "png" | "jpg" (None: the reader's default).
    ``captions``: a .json/.csv of captions by scene name (else each scene's ``caption.txt``).
    Scenes whose ``scene.json`` exists are kept unless ``overwrite`` (so an interrupted run can be
    restarted). ``shard``/``num_shards``: convert every ``num_shards``-th item starting at ``shard``
    (one process per shard); ``limit``: at most this many items. ``options``: the reader's own
    (see each reader class). Raises :class:`ReaderError` (one line) for a bad root or option;
    broken items are skipped and listed in the returned :class:`ConvertReport`.
    """
    if dataset not in READERS:
        raise ReaderError(f"unknown dataset {dataset!r}; choose one of {', '.join(READERS)}")
    if (height is None) != (width is None):
        raise ReaderError(f"give both height and width or neither (got height={height}, width={width})")
    if rgb_format not in (None, "png", "jpg"):
        raise ReaderError(f"rgb_format must be 'png' or 'jpg' for converted scenes, got {rgb_format!r}")
    if not 0 <= shard < num_shards:
        raise ReaderError(f"shard {shard} not in [0, num_shards={num_shards})")
    cls = READERS[dataset]
    known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "root")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ReaderError(f"{dataset}: unknown option(s) {', '.join(unknown)}; its options are {', '.join(known) or 'none'}")
    reader = cls(root, **options)
    by_name = load_captions(captions) if captions else {}
    items = reader.items()[shard::num_shards]
    items = items[:limit] if limit is not None else items
    fs, out_root = fsspec.core.url_to_fs(out)
    out_root = out_root.rstrip("/")
    fs.makedirs(out_root, exist_ok=True)
    report = ConvertReport(dataset, root, out)
    size = (int(height), int(width)) if height is not None else None
    for item in items:
        done = posixpath.join(out_root, item.name, "scene.json")
        if fs.exists(done):
            if not overwrite:
                report.existing.append(item.name)
                continue
            fs.rm(done)  # the scene is incomplete while it is rewritten
        writer = SceneWriter(posixpath.join(out_root, item.name), item.name, cls.kind, size, rgb_format or cls.rgb_format)
        try:
            fps = reader.convert(item, writer)
            writer.finish(fps, by_name.get(item.name) or reader.caption(item))
        except (BrokenItem, CorruptSampleError, SceneFormatError, KeyError, TypeError, ValueError, IndexError) as e:
            # Malformed content of one item (a field missing or of the wrong type) must not end a long run either.
            expected = isinstance(e, (BrokenItem, CorruptSampleError, SceneFormatError))
            report.skipped[item.name] = str(e) if expected else f"{type(e).__name__}: {e}"
            logger.warning("%s: skipping %s (%s)", dataset, item.name, e)
            _remove_partial(fs, out_root, item.name)
            continue
        report.converted.append(item.name)
        report.frames_dropped += writer.dropped
    return report

