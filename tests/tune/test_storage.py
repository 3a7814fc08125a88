"""Storages: the journal file's heartbeat finds a dead worker's trial, fails it once and queues its retry with the
same parameters; slots are counted without the replaced trial; unusable storages fail with a clear reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ecgml.tune.storage import HEARTBEAT_ATTR, StorageError, open_storage, redact
from ecgml.tune.study import slots_used
from ecgml.tune.worker import _claim_waiting

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_journal_heartbeat_fails_a_stale_trial_and_queues_its_retry(tmp_path: Path) -> None:
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
    from optuna.trial import TrialState

    retried: list[int] = []

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        retried.append(trial.number)
        RetryHeartbeatStaleTrialCallback()(study, trial)

    path = tmp_path / "study.journal"
    storage = open_storage(str(path), heartbeat_interval=1, grace_period=2, stale_callback=callback)
    study = optuna.create_study(storage=storage, study_name="hb", direction="maximize")
    study.enqueue_trial({})
    study.enqueue_trial({})
    alive, dead = _claim_waiting(study), _claim_waiting(study)
    assert alive is not None and dead is not None and _claim_waiting(study) is None
    for trial_id in (alive, dead):
        optuna.Trial(study, trial_id).suggest_float("x", 0, 1)
        storage.record_heartbeat(trial_id)
    fail_stale_trials(study)
    assert retried == []  # fresh heartbeats: nothing is stale

    time.sleep(2.5)  # longer than the grace period: only the live worker keeps beating
    storage.record_heartbeat(alive)
    # a second process sees the same journal and races to fail the same trial: only one succeeds
    other = open_storage(str(path), heartbeat_interval=1, grace_period=2, stale_callback=callback)
    fail_stale_trials(study)
    fail_stale_trials(optuna.load_study(study_name="hb", storage=other))
    trials = study.get_trials()
    assert retried == [1]
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    assert trials[2].params == trials[1].params and trials[2].system_attrs["failed_trial"] == 1
    assert slots_used(trials) == 2  # the retry takes the failed trial's slot


def test_unusable_storages_are_named(tmp_path: Path) -> None:
    from tests.servers import free_port

    port = free_port()  # nothing listens there
    with pytest.raises(StorageError, match=rf"storage postgresql://u:\*\*\*@127.0.0.1:{port}/db cannot be used"):
        open_storage(f"postgresql://u:secret@127.0.0.1:{port}/db")
    with pytest.raises(StorageError, match="does not exist or is not writable"):
        open_storage(str(tmp_path / "missing" / "study.journal"))
    with pytest.raises(StorageError, match="grace period"):
        open_storage(str(tmp_path / "a.journal"), heartbeat_interval=5, grace_period=5)
    assert redact("postgresql://user:pw@db:5432/optuna") == "postgresql://user:***@db:5432/optuna"


@pytest.mark.filterwarnings("ignore:could not close the MLflow run")
def test_orphans_and_inherited_heartbeats(tmp_path: Path) -> None:
    """A trial claimed by a worker that died before its first heartbeat is failed and retried (RDBStorage never
    takes a trial without heartbeats for stale); a retry that inherited its predecessor's old heartbeat is not
    taken for stale the moment it is claimed."""
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    from ecgml.tune.worker import _fail_orphans

    storage = open_storage(str(tmp_path / "o.journal"), heartbeat_interval=1, grace_period=30)
    study = optuna.create_study(storage=storage, study_name="o", direction="maximize")
    for _ in range(2):
        study.enqueue_trial({})
    orphan, alive = _claim_waiting(study), _claim_waiting(study)
    assert orphan is not None and alive is not None
    study._storage.set_trial_user_attr(alive, "worker_trial", 1)
    study._storage.set_trial_system_attr(orphan, HEARTBEAT_ATTR, time.time() - 3600)  # as a retry inherits it
    fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.RUNNING]  # just claimed
    _fail_orphans(study, 30, 3)
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.RUNNING]  # within the grace
    _fail_orphans(study, 0, 3)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert trials[2].system_attrs["failed_trial"] == 0
