"""Evaluation protocols: dataset layouts (``datasets``), trivial baselines (``baselines``), the
generation protocol (``generation``), the reconstructor's test-time and oracle-camera procedures
(``recon``), scoring (``scoring``) and the benchmarks built from them (``suites``)."""
