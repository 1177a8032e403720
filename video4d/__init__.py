"""video4d: a Wan2.1 DiT fine-tuned into a synchronized multi-view (4D) video diffusion model."""
from video4d.grid import GridShape, ReferenceCells, ReferenceLatents

__all__ = ["GridShape", "ReferenceCells", "ReferenceLatents"]
