"""recon: feedforward 4D reconstructor (VGGT backbone + temporal attention + Gaussian head)."""
