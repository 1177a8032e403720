"""infer4d: the end-to-end 4D inference job above both model packages.

A monocular video (and optionally freeze-time images) and a prompt in; the generated V x T grid
(:mod:`video4d`), per-timestep Gaussians and cameras (:mod:`recon`) and their renders out.
:func:`infer4d.job.run_inference` is what ``launch/infer.py`` calls.
"""
