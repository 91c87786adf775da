"""Every MLflow tag this project writes, by name: runs, registered model versions and prompts."""

# an invocation's runs
MODE = "lifecycle.mode"  # the mode a parent run ran
STAGE = "lifecycle.stage"  # the stage a run ran
STATUS = "lifecycle.status"  # running | success | failed
ERROR = "lifecycle.error"  # the failure, secrets redacted
MODEL_REUSED = "lifecycle.model_reused"  # the experiment reused a model an earlier sweep job loaded
MODEL_URI = "lifecycle.model_uri"  # the model a test run validated
MODEL_VERSION = "lifecycle.model_version"  # the registered version a deploy made or a test validated
ALIAS = "lifecycle.alias"  # the alias a deploy moved
CHAMPION_VERSION = "lifecycle.champion_version"  # a promote run: the champion it compared against ("" if none)
CHALLENGER_VERSION = "lifecycle.challenger_version"  # a promote run: the challenger it judged
VERDICT = "lifecycle.verdict"  # a promote run: promoted | refused | unchanged
MONITOR_SINCE = "lifecycle.monitor.since"  # a monitor run: the window of traces it read (ISO 8601, UTC)...
MONITOR_UNTIL = "lifecycle.monitor.until"  # ...up to here: the next monitor run starts there
MONITOR_AGAINST = "lifecycle.monitor.against"  # ...and the run whose evaluation of the champion it compared with

DATASET = "lifecycle.dataset"  # the evaluation dataset a run answered (experiment, test, promote, sweep jobs)
DATASET_VERSION = "lifecycle.dataset_version"  # ...and its version; on the dataset itself: the version counter

# evaluation datasets
DATASET_CONTENT = "lifecycle.content_sha256"  # the records' sha256: a change raises the version

# a sweep's runs
SWEEP_ID = "lifecycle.sweep_id"
SWEEP_JOB = "lifecycle.sweep_job"  # the job's number in its sweep
SWEEP_WORKER = "lifecycle.sweep_worker"  # host:pid of the process that ran the job (Ray and joblib reuse theirs)
OVERRIDES = "lifecycle.overrides"  # what set the job (or the sweep) apart
SWEEP_BEST = "lifecycle.sweep.best"  # on the sweep's run: the best job

# registered model versions and prompts
RUN_ID = "lifecycle.run_id"  # the deploy run that registered a version
PROMPT = "lifecycle.prompt"  # the prompt template a version was deployed with
PROMOTION = "lifecycle.promotion"  # a version's last promotion outcome: promoted | refused | replaced | kept
PROMOTION_AGAINST = "lifecycle.promotion.against"  # ...the other version in that decision ("" if none)
PROMOTION_RUN = "lifecycle.promotion.run_id"  # ...and the promote run that explains it
DESCRIPTION = "lifecycle.description"  # a prompt template's description
