"""MLflow run plumbing shared by every command: opening or resuming a run, per-epoch metrics that survive a
tracking outage, and the tags and inputs every run carries. Where runs are tracked, and the checks that the
store answers, are :mod:`ecgml.tracking.store`.

Under ``torchrun`` only rank 0 calls anything here; other ranks get :data:`None` runs.

Outages: a tracking server that stops during training must not cost the training. :class:`MetricLog`
keeps the epochs it could not send and sends them when the server answers again; when it does not
come back within :func:`tracking_wait_s`, the caller fails with :class:`TrackingUnavailable`, whose
message says what was not logged and how to resume (the checkpoint holds every epoch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pandas as pd

from ecgml.tracking.store import (
    TrackingError,
    TrackingUnavailable,
    tracking_client,
    tracking_unreachable,
    tracking_uri,
    tracking_wait_s,
)


def _warn(message: str) -> None:
    """Said on stderr, where a user watching a long job looks, whatever the logging configuration."""
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


class MetricLog:
    """Per-epoch metrics of one run, sent as each epoch ends; a tracking outage queues them instead of
    stopping the training, and they are sent (once: steps the store already holds are skipped) when the
    server answers again.

    A store that answers but refuses a call is a real error and is raised at once; only an HTTP server
    that fails its ``/health`` probe counts as an outage.
    """

    def __init__(self, run_id: str, uri: str | None = None, *, key: str = "val_macro_auc",
                 warn: Callable[[str], None] = _warn) -> None:
        self.run_id = run_id
        self.uri = uri or tracking_uri()
        self.key = key
        self.warn = warn
        self.pending: dict[int, dict[str, float]] = {}
        #: Why the server was last found unreachable (None while it answers).
        self.failure: str | None = None
        self.sent: list[int] = []

    def logged_steps(self) -> set[int]:
        """Steps of ``key`` the store already holds for this run."""
        from mlflow.tracking import MlflowClient

        return {m.step for m in MlflowClient(self.uri).get_metric_history(self.run_id, self.key)}

    def log(self, step: int, metrics: Mapping[str, float]) -> bool:
        """Queue one epoch's metrics and try to send everything queued; True when nothing is left."""
        self.pending[step] = dict(metrics)
        return self.flush()

    def flush(self) -> bool:
        """Send the queued epochs in order; an outage keeps them queued (True when nothing is left)."""
        import mlflow

        if not self.pending:
            return True
        if self.failure is not None:
            reason = tracking_unreachable(self.uri)
            if reason is not None:
                self.failure = reason
                return False
            try:  # a call may have landed although its answer was lost: never log a step twice
                held = self.logged_steps()
            except Exception as exc:  # any failure here means the outage goes on
                return self._failed(exc)
            self.pending = {s: m for s, m in self.pending.items() if s not in held}
        for step in sorted(self.pending):
            try:
                mlflow.log_metrics(self.pending[step], step=step, run_id=self.run_id)
            except Exception as exc:  # MlflowException, requests' errors, OSError
                return self._failed(exc)
            del self.pending[step]
            self.sent.append(step)
        if self.failure is not None:
            self.warn(f"tracking server {self.uri} answers again; the queued epoch metrics were logged")
            self.failure = None
        return True

    def _failed(self, exc: Exception) -> bool:
        reason = tracking_unreachable(self.uri)
        if reason is None:
            raise exc
        if self.failure is None:
            self.warn(f"tracking server {self.uri} is unreachable ({reason}): the metrics of "
                      f"{epochs_text(self.pending)} are not logged yet. Training continues; every epoch is in the "
                      "checkpoint, and the metrics are sent when the server answers again")
        self.failure = reason
        return False

    def finish(self, wait_s: float | None = None, *, poll_s: float = 1.0) -> None:
        """Send what is queued, waiting up to ``wait_s`` (default :func:`tracking_wait_s`) for the server.

        Raises :class:`TrackingUnavailable` naming the server and the steps still unsent.
        """
        wait_s = tracking_wait_s() if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        delay = poll_s
        while not self.flush():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TrackingUnavailable(f"tracking server {self.uri} is unreachable ({self.failure}) after "
                                          f"waiting {wait_s:g} s; the metrics of {epochs_text(self.pending)} "
                                          "were not logged")
            time.sleep(min(delay, left))
            delay = min(delay * 2, 30.0)


def epochs_text(steps: Iterable[int]) -> str:
    """Steps 2, 3 -> "epochs 3, 4 (MLflow steps 2, 3)": users count epochs from 1, MLflow from 0."""
    ordered = sorted(steps)
    plural = "s" if len(ordered) > 1 else ""
    return (f"epoch{plural} {', '.join(str(s + 1) for s in ordered)} "
            f"(MLflow step{plural} {', '.join(map(str, ordered))})")


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str:
    """The commit the code runs at (``unknown`` outside a git checkout), with ``-dirty`` if modified."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


@contextmanager
def open_run(
    experiment: str,
    *,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    system_metrics: bool = True,
    parent_run_id: str | None = None,
) -> Iterator[Any]:
    """Start a run (or resume ``run_id``, or adopt the run ``mlflow run`` started) and end it cleanly.

    With ``parent_run_id`` a new run is that run's child whichever run is active: MLflow's
    ``start_run(nested=True)`` makes a new run the child of the *active* run and overwrites a
    ``mlflow.parentRunId`` tag (and its own ``parent_run_id`` insists on the active run), so the child is
    created with its tag through the client, then resumed. Such a run never adopts ``$MLFLOW_RUN_ID``.

    A step experiment ecgml knows gets its description (:func:`describe_experiment`) unless it has one.
    A run that raises is marked FAILED; a KeyboardInterrupt marks it KILLED. Either way what was
    already logged stays. After :class:`TrackingUnavailable` the store is not called again: the run is
    left RUNNING there (as after ``kill -9``), which is what ``--resume`` continues.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    nested = nested or bool(parent_run_id)
    run_id = run_id or (None if nested else os.environ.get("MLFLOW_RUN_ID"))
    if run_id is None:
        experiment_id = mlflow.set_experiment(experiment).experiment_id
        if parent_run_id:
            run_id = _create_child(experiment_id, run_name, {**(tags or {}), MLFLOW_PARENT_TAG: parent_run_id})
            tags = None
    # MLflow's start_run adopts $MLFLOW_RUN_ID whenever it is given no run id: a child run opened inside the
    # run `mlflow run` started would become that run. The adoption is decided above; hide the variable here.
    adopted = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        run = mlflow.start_run(run_id=run_id, run_name=run_name, nested=nested, tags=dict(tags or {}),
                               log_system_metrics=system_metrics)
    finally:
        if adopted is not None:
            os.environ["MLFLOW_RUN_ID"] = adopted
    status: str | None = "FINISHED"
    try:
        describe_experiment(run.info.experiment_id)
        yield run
    except TrackingUnavailable:
        status = None
        raise
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if status is None:
            _forget_active_run()
        else:
            _end_run(status, failing=status != "FINISHED")


MLFLOW_PARENT_TAG = "mlflow.parentRunId"


def _create_child(experiment_id: str, run_name: str | None, tags: Mapping[str, str]) -> str:
    """A new run with its parent tag, and the context tags ``start_run`` would add (source, user, commit)."""
    from mlflow.tracking.context.registry import resolve_tags

    return str(tracking_client().create_run(experiment_id, run_name=run_name,
                                            tags=resolve_tags(dict(tags))).info.run_id)


def _end_run(status: str, *, failing: bool) -> None:
    """End the active run; if the store fails meanwhile while another error is on its way, say so and let
    that error through (it is the one the user needs)."""
    import mlflow

    try:
        mlflow.end_run(status=status)
    except Exception as exc:  # MlflowException or a connection error
        _forget_active_run()
        if not failing:
            raise TrackingError(f"tracking store {tracking_uri()}: could not mark the run {status} ({exc})") from exc
        _warn(f"tracking store {tracking_uri()}: could not mark the run {status}; it stays RUNNING there")


def _forget_active_run() -> None:
    """Drop the active run on this side only (no call to an unreachable store) and stop its system
    metrics thread without a final flush."""
    from mlflow.environment_variables import MLFLOW_RUN_ID
    from mlflow.tracking import fluent

    MLFLOW_RUN_ID.unset()
    stack = fluent._active_run_stack.get()  # MLflow keeps no public way to leave a run without ending it
    if not stack:
        return
    run = stack.pop()
    monitor = getattr(fluent, "run_id_to_system_metrics_monitor", {}).pop(run.info.run_id, None)
    shutdown = getattr(monitor, "_shutdown_event", None)
    if shutdown is not None:
        shutdown.set()


def log_json(obj: Any, artifact_file: str) -> None:
    """Log a JSON document (``config.json``, statistics) as an artifact of the active run."""
    import mlflow

    mlflow.log_dict(json.loads(json.dumps(obj, default=str)), artifact_file)


#: How often a dataset input is logged again after another process inserted the same dataset first.
DATASET_RACE_TRIES = 4


def _lost_dataset_race(exc: Exception) -> bool:
    """The store refused a dataset because another writer inserted the same (experiment, name, digest) between
    MLflow's check and its insert (SQLite's and PostgreSQL's wording of a unique-key violation)."""
    text = str(exc)
    return "datasets" in text and ("UNIQUE constraint failed" in text or "duplicate key value" in text)


def log_split_inputs(splits: Mapping[str, pd.DataFrame], *, name: str, source: str, digest: str) -> None:
    """Log each split's records index as an MLflow dataset input with its split as context.

    Why the retry: MLflow's store looks a dataset up, then inserts it if absent, with no lock between the two,
    so two runs of ``--jobs N`` logging the same split at once can both miss it and the second
    insert fails on the unique key. Logging again finds the row the other writer committed and only links it.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    for split, table in splits.items():
        index = table[[c for c in ("record_id", "patient_id", "fold") if c in table.columns]].reset_index(drop=True)
        dataset = mlflow.data.from_pandas(index, source=source, name=f"{name}-{split}",
                                          digest=f"{digest[:8]}-{split}")
        for attempt in range(1, DATASET_RACE_TRIES + 1):
            try:
                mlflow.log_input(dataset, context=split)
                break
            except MlflowException as exc:
                if attempt == DATASET_RACE_TRIES or not _lost_dataset_race(exc):
                    raise
                time.sleep(0.05 * attempt)


def log_params_once(params: Mapping[str, Any], run_id: str | None = None) -> dict[str, str]:
    """Log ``params`` on the run, skipping any it already holds with the same meaning.

    Why: ``mlflow run`` logs the entry point's parameters as typed (``fraction=.1``); MLflow refuses to log a
    param again with another text, so ``0.1`` would fail the run. A value equal as a number or as text is
    kept as it is; a real disagreement is said on stderr and the first value stays. Returns what was logged.
    """
    import mlflow

    run_id = run_id or mlflow.active_run().info.run_id
    held = mlflow.MlflowClient().get_run(run_id).data.params
    fresh: dict[str, str] = {}
    for key, value in params.items():
        text = str(value)
        if key not in held:
            fresh[key] = text
        elif not _same_value(held[key], text):
            _warn(f"run {run_id} already holds param {key}={held[key]!r}; {text!r} is not logged over it")
    if fresh:
        mlflow.log_params(fresh, run_id=run_id)
    return fresh


def _same_value(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return a.lower() == b.lower()


#: The tag MLflow's UI shows as a run's or an experiment's description.
NOTE_TAG = "mlflow.note.content"


def set_description(text: str, *, run_id: str | None = None, experiment: str | None = None) -> None:
    """Give a run or an experiment the description MLflow's UI shows above it (``mlflow.note.content``);
    an experiment's description is never written over (a user's, or an earlier ecgml one)."""
    import mlflow

    client = mlflow.MlflowClient()
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is not None and not (found.tags or {}).get(NOTE_TAG):
            client.set_experiment_tag(found.experiment_id, NOTE_TAG, text)
    if run_id is not None:
        client.set_tag(run_id, NOTE_TAG, text)


#: MLflow's tag for what an experiment holds: model training, not a GenAI application. MLflow's tools that pick
#: a view per experiment read it; the 3.17 UI takes its view from its GenAI / Model training switch instead,
#: which the link of :func:`experiment_runs_link` sets.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def describe_experiment(experiment_id: str) -> bool:
    """Mark an experiment ecgml logs into as model development (:data:`EXPERIMENT_KIND_TAG`, unless it has a
    kind), and give a step experiment (``ecgml-finetune``, ...:
    :data:`~ecgml.tracking.run_names.EXPERIMENT_DESCRIPTIONS`) its description, saying what its runs are and
    how to compare them, unless it already has one (a user's text is never replaced). Returns whether it
    wrote a description."""
    import mlflow

    from ecgml.tracking.run_names import experiment_description

    client = mlflow.MlflowClient()
    found = client.get_experiment(experiment_id)
    if not (found.tags or {}).get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    text = experiment_description(found.name)
    if text is None or (found.tags or {}).get(NOTE_TAG):
        return False
    client.set_experiment_tag(experiment_id, NOTE_TAG, text)
    return True


def ui_base(uri: str | None = None) -> tuple[str, str | None]:
    """The UI's address for a store, and for a local store the command that starts the UI on it."""
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/"), None
    return "http://127.0.0.1:5000", f"mlflow ui --backend-store-uri {uri}"


def experiment_runs_link(experiment_id: str, uri: str | None = None) -> str:
    """The experiment's runs table (``workflowType=machine_learning``: the model-training view, not MLflow 3's
    GenAI overview)."""
    return f"{ui_base(uri)[0]}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def version_link(registered: str, uri: str | None = None) -> str:
    """The registered version's page, from ``models:/NAME/VERSION``."""
    name, _, version = registered.removeprefix("models:/").rpartition("/")
    return f"{ui_base(uri)[0]}/#/models/{name}/versions/{version}"


def run_link(run_id: str, uri: str | None = None) -> str:
    """Where a person opens the run: the server's page, or for a local store how to start the UI on it."""
    import mlflow

    base, start = ui_base(uri)
    run = mlflow.MlflowClient(uri or tracking_uri()).get_run(run_id)
    link = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    return link if start is None else f"{link} (after `{start}`)"


def produced_text(run_id: str, registered: str | None = None, uri: str | None = None) -> str:
    """What a job produced, in the lines it ends by printing: run id and name, registered version (given, or
    the run's ``ecgml.registered_as`` tag), and the UI's pages: the experiment's runs, the run, the version."""
    import mlflow

    uri = uri or tracking_uri()
    run = mlflow.MlflowClient(uri).get_run(run_id)
    experiment = mlflow.MlflowClient(uri).get_experiment(run.info.experiment_id).name
    registered = registered or run.data.tags.get("ecgml.registered_as")
    lines = [f"run:        {run.info.run_name} ({run_id}) in experiment {experiment}"]
    if registered:
        name, _, version = registered.removeprefix("models:/").rpartition("/")
        lines.append(f"registered: {name} version {version} ({registered})")
    lines.append(f"open:       {run_link(run_id, uri)}")
    lines.append(f"runs:       {experiment_runs_link(run.info.experiment_id, uri)}")
    if registered:
        lines.append(f"version:    {version_link(registered, uri)}")
    return "\n".join(lines)
