"""recon: feedforward 4D reconstructor (VGGT backbone + temporal attention + Gaussian head).

Public API: :func:`load_reconstructor` (from :mod:`recon.model`; presets ``vggt-1b``,
``vggt-1b-4d``, ``tiny``, ``tiny-4d``). Training: :mod:`recon.train_task` and
``launch/train_recon.py`` (docs/recon.md).
"""

__all__ = ["load_reconstructor"]


def __getattr__(name: str):
    # Lazy so that `import recon.geometry` (and friends) does not import the model code.
    if name == "load_reconstructor":
        from recon.model import load_reconstructor

        return load_reconstructor
    raise AttributeError(f"module 'recon' has no attribute {name!r}")
