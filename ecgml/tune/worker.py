"""A tuning worker: claims the study's waiting trials one at a time until none is left, runs each as a nested
MLflow run of the study's parent run, and gives the trials of dead workers back to the study.

Why not ``study.optimize(n_trials=...)``: with several workers its count is per worker, and a stop callback
overshoots when workers finish together. Here the study owns exactly ``n_trials`` slots, enqueued as empty
WAITING trials when it is created (the sampler still chooses their parameters); claiming a waiting trial is
atomic in every storage (a conditional update), so no slot runs twice and none is lost. A worker whose trial
goes stale (no heartbeat for the grace period: ``kill -9``, a lost machine) has that trial failed by another
worker, which enqueues a retry with the same parameters and closes the dead trial's MLflow run. A worker stays
until no trial is waiting or running, so a retry always finds someone to run it.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ecgml.runtime.signals import sigterm_as_interrupt
from ecgml.tune import logger
from ecgml.tune.space import apply_params
from ecgml.tune.spec import StudyError, TuneSpec
from ecgml.tune.storage import StudyStorage, open_storage

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

Echo = Callable[[str], None]


@dataclass
class WorkerSummary:
    """What one worker did: trial numbers by final state."""

    complete: list[int]
    pruned: list[int]
    failed: list[int]


class StaleTrialRetry:
    """Heartbeat-stale trial callback: retry the trial (same parameters) and close its orphaned MLflow run."""

    def __init__(self, max_retry: int | None = 3) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = (f"worker {trial.user_attrs.get('worker', '?')} stopped sending heartbeats; "
                  "the trial is failed and retried")
        _retry(study, trial, self.max_retry)
        try:
            logger.close_stale_run(study, trial, reason)
        except Exception as exc:  # the retry matters more than the bookkeeping of a dead run
            warnings.warn(f"could not close the MLflow run of stale trial {trial.number}: {exc}", stacklevel=1)


def _retry(study: optuna.Study, trial: FrozenTrial, max_retry: int | None) -> None:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, trial)


def open_study(storage: str, study_name: str, *, worker_index: int, heartbeat_interval: int,
               grace_period: int | None, max_retry: int | None) -> tuple[optuna.Study, TuneSpec]:
    """Load an existing study with this worker's sampler and the study's pruner."""
    import optuna

    backend = open_storage(storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                           stale_callback=StaleTrialRetry(max_retry))
    try:
        probe = optuna.load_study(study_name=study_name, storage=backend)
    except KeyError:
        raise StudyError(f"no study named {study_name!r} in the storage") from None
    spec = TuneSpec.from_study(probe)
    study = optuna.load_study(study_name=study_name, storage=backend, sampler=spec.make_sampler(worker_index),
                              pruner=spec.make_pruner())
    return study, spec


def run_worker(storage: str, study_name: str, *, worker_index: int = 0, heartbeat_interval: int = 30,
               grace_period: int | None = None, max_retry: int | None = 3, echo: Echo = print) -> WorkerSummary:
    """Run the study's waiting trials until none is waiting or running; returns what this worker ran."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    from ecgml.tracking.store import check_tracking_uri

    check_tracking_uri()
    study, spec = open_study(storage, study_name, worker_index=worker_index, heartbeat_interval=heartbeat_interval,
                             grace_period=grace_period, max_retry=max_retry)
    if spec.parent_run_id is None:
        raise StudyError(f"study {study_name!r} has no parent run yet; start it with `ecgml tune` first")
    logger.check_parent_run(spec.parent_run_id)
    summary = WorkerSummary([], [], [])
    grace = grace_period if grace_period is not None else 2 * heartbeat_interval
    me = f"{socket.gethostname()}:{os.getpid()}"
    poll = min(float(heartbeat_interval), 2.0)
    with sigterm_as_interrupt():
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fail_stale_trials is experimental
                fail_stale_trials(study)
            _fail_orphans(study, grace, max_retry)
            trial_id = _claim_waiting(study)
            if trial_id is None:
                if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    return summary
                time.sleep(poll)  # another worker's trial may still go stale and come back as a retry
                continue
            state, number = _run_trial(study, spec, trial_id, me, heartbeat_interval, max_retry, echo)
            {"COMPLETE": summary.complete, "PRUNED": summary.pruned}.get(state, summary.failed).append(number)


def _fail_orphans(study: optuna.Study, grace: float, max_retry: int | None) -> None:
    """Fail and retry RUNNING trials claimed longer than ``grace`` ago that never got their worker attribute: their
    worker died between claiming and its first heartbeat, and RDBStorage never takes a trial without any
    heartbeat for stale, so without this the other workers would wait for it forever."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    store = StudyStorage(study)
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("worker_trial") == trial.number or trial.datetime_start is None:
            continue
        if now - trial.datetime_start.timestamp() <= grace:
            continue
        try:
            if store.set_state(store.trial_id(trial), TrialState.FAIL):
                StaleTrialRetry(max_retry)(study, store.get_trial(store.trial_id(trial)))
        except UpdateFinishedTrialError:  # another worker got there first
            continue


def _claim_waiting(study: optuna.Study) -> int | None:
    """Atomically move one WAITING trial to RUNNING for this worker (what ``Study.ask`` does, minus creating a
    new trial when none waits: the study's size is fixed by its slots)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    store = StudyStorage(study)
    for trial in store.waiting_trials():
        try:
            if store.set_state(store.trial_id(trial), TrialState.RUNNING):
                store.forget_cached_trials()
                return store.trial_id(trial)
        except UpdateFinishedTrialError:
            continue
    return None


@contextmanager
def _heartbeat(storage: StudyStorage, trial_id: int, interval: int) -> Iterator[None]:
    """Record the trial's heartbeat every ``interval`` seconds while it runs."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried at the next interval
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _run_trial(study: optuna.Study, spec: TuneSpec, trial_id: int, me: str, heartbeat_interval: int,
               max_retry: int | None, echo: Echo) -> tuple[str, int]:
    """One trial from claim to tell; returns its final state name and number."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from ecgml.train.runner import run_training

    store = StudyStorage(study)
    trial = optuna.Trial(study, trial_id)
    number = trial.number
    retry_of = store.get_trial(trial_id).system_attrs.get("failed_trial")
    began = time.perf_counter()
    run_id: str | None = None
    params: dict[str, Any] = {}
    value: float | None = None
    reason: str | None = None
    echo(f"[{me}] trial {number} started" + (f" (retry of trial {retry_of})" if retry_of is not None else ""))
    with _heartbeat(store, trial_id, heartbeat_interval):
        trial.set_user_attr("worker", me)  # after the first heartbeat: a trial with a worker has a heartbeat
        trial.set_user_attr("worker_trial", number)  # a retry inherits "worker" from the dead trial, not this
        try:
            params = spec.space.sample(trial)
            config = replace(apply_params(spec.base, params), run_name=f"{study.study_name}-trial-{number}")

            def on_epoch(record: Any) -> None:
                nonlocal run_id
                if run_id is None:
                    import mlflow

                    run_id = mlflow.active_run().info.run_id
                    trial.set_user_attr(logger.RUN_ID_ATTR, run_id)
                    logger.log_trial_params(run_id, params)
                trial.report(record.val_macro_auc, record.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {record.epoch + 1} "
                                             f"(val_macro_auc {record.val_macro_auc:.4f})")

            outcome = run_training(config, progress=False, parent_run_id=spec.parent_run_id,
                                   extra_tags=logger.child_tags(study.study_name, spec.tags, number, retry_of),
                                   on_epoch=on_epoch)
            run_id = outcome.run_id or run_id
            value = float(outcome.val_macro_auc)
            state = "COMPLETE" if math.isfinite(value) else "FAIL"
            reason = None if state == "COMPLETE" else f"validation macro AUC is {value}"
        except optuna.TrialPruned as exc:
            state, reason = "PRUNED", str(exc)
        except KeyboardInterrupt:
            _interrupted(study, trial_id, number, run_id, spec, params, max_retry)
            raise
        except Exception as exc:
            state = "FAIL"
            reason = f"{type(exc).__name__}: {exc}"
            echo(f"[{me}] trial {number} failed:\n{traceback.format_exc(limit=6)}")
    taken = store.get_trial(trial_id).state.is_finished()
    if taken:  # failed by another worker (our heartbeat was late), which queued a retry: tell nothing
        state, value = "FAIL", None
        reason = "its heartbeats came later than the grace period; another worker failed it and queued a retry"
    with contextlib.suppress(UpdateFinishedTrialError):  # attributes of a trial another worker failed stay as they are
        if reason:  # shown by optuna-dashboard too
            trial.set_user_attr("fail_reason" if state == "FAIL" else "prune_reason", reason[:2000])
    run_id = run_id or logger.find_trial_run(spec.experiment, study.study_name, number)
    if run_id is not None:
        with contextlib.suppress(UpdateFinishedTrialError):
            trial.set_user_attr(logger.RUN_ID_ATTR, run_id)
        logger.finish_trial_run(run_id, state, params=params, value=value, reason=reason,
                                parent_run_id=spec.parent_run_id, number=number)
    if not taken:  # skip_if_finished: another worker may fail it between the check above and now
        told = study.tell(trial, value if state == "COMPLETE" else None,
                          state=None if state == "COMPLETE" else TrialState[state], skip_if_finished=True)
        state = told.state.name if told.state.is_finished() else state
    shown = f" value {value:.4f}" if state == "COMPLETE" and value is not None else (f" ({reason})" if reason else "")
    echo(f"[{me}] trial {number} {state}{shown} in {time.perf_counter() - began:.1f} s, run {run_id}")
    return state, number


def _interrupted(study: optuna.Study, trial_id: int, number: int, run_id: str | None, spec: TuneSpec,
                 params: dict[str, Any], max_retry: int | None) -> None:
    """Ctrl-C or SIGTERM: fail the trial, enqueue its retry (so ``--resume`` redoes it), mark its run KILLED."""
    from optuna.trial import TrialState

    try:
        study.tell(number, state=TrialState.FAIL)
        _retry(study, StudyStorage(study).get_trial(trial_id), max_retry)
        run_id = run_id or logger.find_trial_run(spec.experiment, study.study_name, number)
        if run_id is not None:
            logger.finish_trial_run(run_id, "FAIL", params=params, reason="interrupted (Ctrl-C or SIGTERM); retried",
                                    status="KILLED")
    except Exception as exc:  # interrupted while bookkeeping: the heartbeat will catch the trial instead
        warnings.warn(f"could not record the interruption of trial {number}: {exc}", stacklevel=1)

