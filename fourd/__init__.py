"""fourd: infrastructure shared by the video model and the reconstructor (weights I/O, training engine)."""
