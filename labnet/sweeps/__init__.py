"""Sweeps: the Hydra callback (``callback``), what makes jobs the same (``identity``), and what each
job of a multirun does before it trains: skip, resume, stop after a failure (``jobs``).

The package is also callable: ``labnet.sweep(...)`` is ``labnet.api.sweep``, the Python API."""
