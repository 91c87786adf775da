"""Hydra multirun sweeps (``python main.py -m mode=experiment prompt=glob(*)``): one MLflow run for the sweep, one
run per job under it, and a verdict at the end. This package is the multirun shell, above the integrations:

- ``callback``: ``SweepCallback`` (conf/hydra/default.yaml), the sweep's own start and end in the launching process.
- ``launchers``: what a launcher whose workers inherit nothing (Ray) needs: a shared tracking server, the
  sweep's identity in the tasks' environment.

Below it: the sweep's MLflow side (``lifecycle.integrations.sweep_runs``), and the pure parts both lean on,
``lifecycle.sweep_job`` (a job's identity in its sweep and the tags its runs carry) and ``lifecycle.ranking`` (the
jobs side by side, ranked by ``sweep.rank_by``). ``lifecycle.sessions`` picks a job's session. Nothing below imports
this package (tests/test_layering.py).
"""
