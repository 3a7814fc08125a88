"""Served inference in parallel: a request's records in batched forwards, concurrent requests combined,
and each scoring-server worker's share of the cores."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ecgml.runtime.threads import plan_budget
from ecgml.tracking.batching import BatchedForward
from ecgml.tracking.pyfunc import EcgClassifier
from ecgml.tracking.scoring_workers import batching_enabled, scoring_workers, worker_budget
from tests.serving.conftest import ecg


def _records(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"signal": (ecg(100, seconds=float(rng.integers(3, 12))) * rng.uniform(0.5, 1.5)).tolist(), "fs": 100}
            for _ in range(n)]


def test_a_request_of_many_records_equals_them_one_by_one(weights: Path) -> None:
    clf = EcgClassifier(weights)
    rows = _records(9)  # 3-11 s records: 1 to 7 windows each
    one_by_one = np.stack([clf.predict_proba([row])[0] for row in rows])
    before = clf.forward.forwards
    batched = clf.predict_proba(rows)
    assert clf.forward.forwards - before == 1  # all 9 records' windows in one forward
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-5)


def test_a_long_request_runs_in_chunks_with_the_same_answer(weights: Path) -> None:
    clf = EcgClassifier(weights)
    rows = _records(6)
    whole = clf.predict_proba(rows)
    clf.forward.max_windows = 5
    chunked = clf.predict_proba(rows)
    assert clf.forward.forwards > 3
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5)


def test_concurrent_callers_share_forwards_and_each_gets_its_own_rows() -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def forward(windows: np.ndarray) -> np.ndarray:
        calls.append(len(windows))
        if len(calls) == 1:  # the first forward holds the model until every other caller has queued
            started.set()
            release.wait(10)
        return windows[:, :1] * 2.0

    batched = BatchedForward(forward)
    results: dict[int, np.ndarray] = {}

    def call(k: int) -> None:
        results[k] = batched(np.full((k + 1, 3), float(k)))

    first = threading.Thread(target=call, args=(0,))
    first.start()
    started.wait(10)
    others = [threading.Thread(target=call, args=(k,)) for k in range(1, 6)]
    for thread in others:
        thread.start()
    while len(batched._pending) < 5:  # all five queued behind the running forward
        threading.Event().wait(0.01)
    release.set()
    for thread in (first, *others):
        thread.join(10)
    assert calls == [1, 2 + 3 + 4 + 5 + 6]  # the five waiting callers in one forward
    for k in range(6):
        np.testing.assert_array_equal(results[k], np.full((k + 1, 1), 2.0 * k))


def test_a_failed_forward_reaches_every_caller_in_its_batch() -> None:
    def forward(windows: np.ndarray) -> np.ndarray:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        BatchedForward(forward)(np.zeros((2, 3)))


def test_uncombined_forwards_stay_per_request(weights: Path) -> None:
    clf = EcgClassifier(weights, combine=False)
    np.testing.assert_allclose(clf.predict_proba(_records(3)), EcgClassifier(weights).predict_proba(_records(3)),
                               rtol=0, atol=1e-6)
    assert not batching_enabled({"ECGML_SERVE_BATCHING": "off"}) and batching_enabled({})


@pytest.mark.parametrize(("argv", "env", "workers"), [
    (["uvicorn", "--host", "127.0.0.1", "--workers", "3", "mlflow.pyfunc.scoring_server.app:app"], {}, 3),
    (["uvicorn", "--workers=2", "app"], {}, 2),
    (["uvicorn", "app"], {"WEB_CONCURRENCY": "4"}, 4),
    (["uvicorn", "--workers", "3", "app"], {"ECGML_SERVE_WORKERS": "2"}, 2),
    (["python", "-m", "ecgml.cli", "predict"], {}, 1),
])
def test_the_worker_count_comes_from_the_server(argv: list[str], env: dict[str, str], workers: int) -> None:
    assert scoring_workers(argv, env) == workers


def test_workers_split_the_cores_unless_the_user_set_threads() -> None:
    alone = plan_budget(cores=4, env={})
    assert worker_budget(alone, 1).threads == 4
    assert worker_budget(alone, 2).threads == 2
    assert worker_budget(plan_budget(cores=3, env={}), 2).threads == 1  # never more than the cores together
    assert worker_budget(alone, 8).threads == 1
    assert worker_budget(plan_budget(cores=4, env={"OMP_NUM_THREADS": "3"}), 2).threads == 3
