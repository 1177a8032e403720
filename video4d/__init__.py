"""video4d: a Wan2.1 DiT fine-tuned into a synchronized multi-view (4D) video diffusion model.

Public API: :func:`load_dit` (the DiT), :func:`load_vae` (the Wan2.1 causal 3D VAE),
:func:`load_text_encoder` (umT5, Wan2.1's text encoder) and the grid layout types from
:mod:`video4d.grid`.
"""
from video4d.grid import GridShape, ReferenceCells, ReferenceLatents

__all__ = ["GridShape", "ReferenceCells", "ReferenceLatents", "load_dit", "load_vae", "load_text_encoder"]


def __getattr__(name: str):
    # Lazy so that `import video4d` stays light (no model code imported for the layout types).
    if name == "load_dit":
        from video4d.model import load_dit

        return load_dit
    if name == "load_vae":
        from video4d.vae import load_vae

        return load_vae
    if name == "load_text_encoder":
        from video4d.text_encoder import load_text_encoder

        return load_text_encoder
    raise AttributeError(f"module 'video4d' has no attribute {name!r}")
