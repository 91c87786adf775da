"""Every MLflow tag this project writes, by name: runs, registered model versions and prompts; and the verdicts
they hold, as enums (their ``.value`` is what the tag says)."""

from enum import Enum


class Value(str, Enum):
    """A tag's value: equal to its string, and written as it (``str``, f-strings, JSON)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Promotion(Value):
    """A promote run's verdict (``VERDICT``) and a version's outcome (``PROMOTION``)."""

    PROMOTED = "promoted"  # the challenger became the champion
    REFUSED = "refused"  # it did not: worse beyond a margin
    UNCHANGED = "unchanged"  # a promote run with nothing to decide: the challenger already is the champion
    REPLACED = "replaced"  # the champion's version, when a challenger took its place
    KEPT = "kept"  # ...and when it did not


class Monitoring(Value):
    """A monitor run's verdict (``VERDICT``)."""

    STEADY = "steady"  # production scores within the margins of the champion's evaluation
    DROPPED = "dropped"  # some score fell below it beyond its margin
    UNCOMPARED = "uncompared"  # no trace held text to score


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
VERDICT = "lifecycle.verdict"  # a promote run: Promotion (promoted | refused | unchanged); a monitor run: Monitoring
MONITOR_SINCE = "lifecycle.monitor.since"  # a monitor run: the window of traces it read (ISO 8601, UTC)...
MONITOR_UNTIL = "lifecycle.monitor.until"  # ...up to here: the next monitor run starts there
MONITOR_AGAINST = "lifecycle.monitor.against"  # ...and the run whose evaluation of the champion it compared with
HARVESTED_INTO = "lifecycle.monitor.harvested_into"  # monitor.harvest=true: the evaluation set it grew, name@version

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
PROMOTION = "lifecycle.promotion"  # a version's last promotion outcome: Promotion (promoted|refused|replaced|kept)
PROMOTION_AGAINST = "lifecycle.promotion.against"  # ...the other version in that decision ("" if none)
PROMOTION_RUN = "lifecycle.promotion.run_id"  # ...and the promote run that explains it
DESCRIPTION = "lifecycle.description"  # a prompt template's description
