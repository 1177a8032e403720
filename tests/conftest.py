"""Suite-wide settings: one intra-op thread per process.

The tests run many small tensor ops (and a few 2-process launches) on a 2-core machine; with
torch's default of one thread per core, small ops oversubscribe the cores and run 10-100x slower.
OMP_NUM_THREADS is set before any subprocess starts so launched ranks inherit it.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
