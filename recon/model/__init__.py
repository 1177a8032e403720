"""VGGT-compatible feedforward 4D reconstructor (backbone, temporal attention, heads, loading)."""
from .config import PRESETS, GaussianHeadConfig, ReconstructorConfig, resolve_config
from .gaussian_head import Gaussians
from .loading import LoadReport, build_reconstructor, is_new_layer_key, load_reconstructor, load_weights
from .reconstructor import ReconstructionOutput, Reconstructor

__all__ = [
    "PRESETS",
    "GaussianHeadConfig",
    "Gaussians",
    "LoadReport",
    "ReconstructionOutput",
    "Reconstructor",
    "ReconstructorConfig",
    "build_reconstructor",
    "is_new_layer_key",
    "load_reconstructor",
    "load_weights",
    "resolve_config",
]
