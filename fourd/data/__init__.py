"""Multi-view video data: the on-disk scene format, synthetic 4D scenes, datasets and the mixture.

See ``docs/data_format.md`` for the format. Main entry points: :func:`open_scene`,
:func:`read_scene`, :func:`write_scene`, :func:`generate_scene`, the captioned procedural
scenes :class:`ProceduralSource` / :func:`procedural_scene` (unbounded seeds, held-out rule), the sources
:class:`MultiViewSource`, :class:`HomographyVideoSource`, :class:`StaticSceneSource` and the
:class:`MixtureDataset` (optionally bucketed by :class:`Grid`), read for training through
:class:`fourd.data.loader.StepLoader`.
"""
from fourd.data.buckets import Grid
from fourd.data.datasets import HomographyVideoSource, MultiViewSource, SceneSource, StaticSceneSource
from fourd.data.format import CorruptSampleError, Scene, SceneFormatError, SceneMeta
from fourd.data.mixture import DEFAULT_RATIOS, MixtureDataset
from fourd.data.scene_io import list_scenes, open_scene, read_meta, read_scene, write_scene

__all__ = [
    "DEFAULT_RATIOS",
    "CorruptSampleError",
    "Grid",
    "HomographyVideoSource",
    "MixtureDataset",
    "MultiViewSource",
    "ProceduralSource",
    "SceneSource",
    "StaticSceneSource",
    "Scene",
    "SceneFormatError",
    "SceneMeta",
    "generate_scene",
    "list_scenes",
    "open_scene",
    "procedural_scene",
    "read_meta",
    "read_scene",
    "write_scene",
    "write_synthetic_dataset",
]


def __getattr__(name: str):
    # Lazy, so that `python -m fourd.data.synthetic` does not find the module imported already.
    if name in ("generate_scene", "write_synthetic_dataset"):
        from fourd.data import synthetic

        return getattr(synthetic, name)
    if name in ("ProceduralSource", "procedural_scene"):
        from fourd.data import procedural

        return getattr(procedural, name)
    raise AttributeError(f"module 'fourd.data' has no attribute {name!r}")
