"""Hydra multirun sweeps (``python main.py -m mode=experiment prompt=glob(*)``): one MLflow run for the sweep, one
run per job under it, and a verdict at the end.

- ``job``: a job's identity in its sweep (``current_job``) and the tags its runs carry.
- ``callback``: ``SweepCallback`` (conf/hydra/default.yaml), the sweep's own start and end in the launching process.
- ``launchers``: what a launcher whose workers inherit nothing (Ray) needs: a shared tracking server, the
  sweep's identity in the tasks' environment.
- ``ranking``: the jobs side by side, ranked by ``sweep.rank_by`` (pure).
The sweep's MLflow side is ``lifecycle.integrations.sweep_runs``; ``lifecycle.sessions`` picks a job's session.
"""
