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

    storage.set_trial_system_attr(dead, HEARTBEAT_ATTR, time.time() - 10)  # its worker stopped beating
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
