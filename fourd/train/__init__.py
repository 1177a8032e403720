"""Training system shared by the video model and the reconstructor.

Modules: :mod:`~fourd.train.engine` (plain / DeepSpeed engines behind one interface),
:mod:`~fourd.train.loop` (the generic loop and the :class:`~fourd.train.loop.Task` protocol),
:mod:`~fourd.train.checkpoint` (atomic checkpoints, resume, pruning), :mod:`~fourd.train.schedule`
(warm-up + cosine LR, step schedules), :mod:`~fourd.train.distributed` (ranks, process group,
shared run dir), :mod:`~fourd.train.rng` (RNG capture/restore), :mod:`~fourd.train.observe`
(progress, TensorBoard, metrics, image grids), :mod:`~fourd.train.hydra_app` (config -> run).
"""
