"""The MLflow side of a study: one parent run per study, one nested child run per trial (one level only).

Every child run carries the study's name and tags (so the UI filters by them), the trial number, the trial's
parameters, its per-epoch ``val_macro_auc`` (logged by the training run), its final value and its final
state as the tag ``optuna.trial_state``:

=========  ==================  =========================================================
Optuna     MLflow run status   why
=========  ==================  =========================================================
COMPLETE   FINISHED            trained to the end; ``optuna.trial_value`` holds the value
PRUNED     KILLED              stopped by the pruner (not an error)
FAIL       FAILED              raised, or its worker died (``optuna.fail_reason`` says)
=========  ==================  =========================================================

A worker killed with ``kill -9`` cannot close its run; whoever fails the stale trial (any live worker, by
heartbeat) closes it (:func:`close_stale_run`). Written here rather than taken from optuna-integration,
whose ``MLflowCallback`` is deprecated and does not record pruned trials as such.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ecgml.tracking.runs import describe_experiment
from ecgml.tracking.store import tracking_client

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

STATE_TAG = "optuna.trial_state"
STUDY_TAG = "optuna.study_name"
NUMBER_TAG = "optuna.trial_number"
VALUE_TAG = "optuna.trial_value"
RETRY_TAG = "optuna.retry_of"
REASON_TAG = "optuna.fail_reason"
RUN_ID_ATTR = "mlflow_run_id"
_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    experiment_id = client.create_experiment(name)
    describe_experiment(experiment_id)  # what a tuning experiment holds, as open_run would say it
    return experiment_id


def start_parent_run(experiment: str, study_name: str, tags: Mapping[str, str], params: Mapping[str, Any],
                     documents: Mapping[str, Any]) -> str:
    """Create the study's parent run (left RUNNING until the study ends); returns its id."""
    client = tracking_client()
    run = client.create_run(_experiment_id(client, experiment), run_name=study_name,
                            tags={"ecgml.kind": "tune", STUDY_TAG: study_name, **tags})
    annotate_parent(run.info.run_id, params, documents)
    return run.info.run_id


def annotate_parent(run_id: str, params: Mapping[str, Any], documents: Mapping[str, Any]) -> None:
    """Log the study's settings as params and JSON artifacts (an adopted ``mlflow run`` run gets them too)."""
    import mlflow

    client = tracking_client()
    logged = client.get_run(run_id).data.params
    fresh = [mlflow.entities.Param(k, str(v)) for k, v in params.items() if k not in logged]
    if fresh:
        client.log_batch(run_id, params=fresh)
    for name, doc in documents.items():
        client.log_dict(run_id, json.loads(json.dumps(doc, default=str)), name)


def reopen_parent_run(run_id: str) -> None:
    """A resumed study logs into its old parent run again (RUNNING until it ends)."""
    tracking_client().update_run(run_id, status="RUNNING")


def end_parent_run(run_id: str, status: str) -> None:
    tracking_client().set_terminated(run_id, status)


def experiment_of(run_id: str) -> str:
    """The experiment name of a run (children must go where their parent is, or the UI cannot nest them)."""
    client = tracking_client()
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


def check_parent_run(run_id: str) -> None:
    """A worker joining a study must see the parent run in its tracking store (same server for every machine)."""
    import mlflow

    from ecgml.tracking.store import tracking_uri

    try:
        tracking_client().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        from ecgml.tune.spec import StudyError

        raise StudyError(f"the study's parent run {run_id} is not in the tracking store {tracking_uri()}; every "
                          "worker must log to the same tracking server (set MLFLOW_TRACKING_URI)") from None


def child_tags(study_name: str, study_tags: Mapping[str, str], number: int, retry_of: int | None) -> dict[str, str]:
    """Tags of a trial's child run: the study's name and tags, the trial number, what it retries."""
    tags = {**study_tags, STUDY_TAG: study_name, NUMBER_TAG: str(number), "ecgml.tune_trial": "true"}
    if retry_of is not None:
        tags[RETRY_TAG] = str(retry_of)
    return tags


def find_trial_run(experiment: str, study_name: str, number: int) -> str | None:
    """The child run of trial ``number`` (by its tags), or None if it never started."""
    client = tracking_client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], max_results=1,
                              filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{NUMBER_TAG}` = '{number}'")
    return runs[0].info.run_id if runs else None


def log_trial_params(run_id: str, params: Mapping[str, Any]) -> None:
    """The trial's parameters as params of its run (values the training run logged already are skipped)."""
    import mlflow

    client = tracking_client()
    logged = client.get_run(run_id).data.params
    fresh = [mlflow.entities.Param(k, str(v)) for k, v in params.items() if k not in logged]
    if fresh:
        client.log_batch(run_id, params=fresh)


def finish_trial_run(run_id: str, state: str, *, params: Mapping[str, Any], value: float | None = None,
                     reason: str | None = None, parent_run_id: str | None = None, number: int | None = None,
                     status: str | None = None) -> None:
    """Give a trial's run its final state, value and parameters (and ``status``, default by state); mirror the
    value on the parent run."""
    import mlflow

    client = tracking_client()
    log_trial_params(run_id, params)
    tags = [mlflow.entities.RunTag(STATE_TAG, state)]
    metrics = []
    if value is not None and math.isfinite(value):
        tags.append(mlflow.entities.RunTag(VALUE_TAG, f"{value:.6f}"))
        metrics.append(mlflow.entities.Metric("trial_value", float(value), _now_ms(), 0))
    if reason:
        tags.append(mlflow.entities.RunTag(REASON_TAG, reason[:4000]))
    client.log_batch(run_id, metrics=metrics, tags=tags)
    status = status or _STATUS[state]
    if client.get_run(run_id).info.status != status:
        client.set_terminated(run_id, status)
    if parent_run_id and number is not None and metrics:
        client.log_metric(parent_run_id, "trial_value", float(value), step=number)  # type: ignore[arg-type]


def close_stale_run(study: optuna.Study, trial: FrozenTrial, reason: str) -> str | None:
    """Mark the run of a trial whose worker died FAILED (it was left RUNNING); returns its id if it had one."""
    from ecgml.tune.spec import TuneSpec

    spec = TuneSpec.from_study(study)
    run_id = find_trial_run(spec.experiment, study.study_name, trial.number)
    if run_id is not None:
        finish_trial_run(run_id, "FAIL", params=trial.params, reason=reason)
    return run_id


def record_best(parent_run_id: str, study: optuna.Study) -> FrozenTrial | None:
    """The parent run's summary: best trial number, value, parameters and run id; trial counts; a trials table."""
    import tempfile
    from pathlib import Path

    import mlflow
    from optuna.trial import TrialState

    client = tracking_client()
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials)
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    now = _now_ms()
    metrics = [mlflow.entities.Metric(f"n_{k}", float(v), now, 0) for k, v in counts.items()]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=lambda t: t.value) if complete else None  # type: ignore[arg-type, return-value]
    tags: list[Any] = []
    if best is not None:
        metrics.append(mlflow.entities.Metric("best_value", float(best.value), now, 0))  # type: ignore[arg-type]
        tags += [mlflow.entities.RunTag("optuna.best_trial_number", str(best.number)),
                 mlflow.entities.RunTag("optuna.best_trial_run_id", str(best.user_attrs.get(RUN_ID_ATTR, ""))),
                 mlflow.entities.RunTag("optuna.best_params", json.dumps(best.params, sort_keys=True))]
    client.log_batch(parent_run_id, metrics=metrics, tags=tags)
    with tempfile.TemporaryDirectory() as tmp:
        table = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
        path = Path(tmp) / "trials.csv"
        table.to_csv(path, index=False)
        client.log_artifact(parent_run_id, str(path))
    return best


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
