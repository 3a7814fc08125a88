"""``mlflow models serve --workers 2`` of a registered ecgml model: concurrent requests, each answered with
the probabilities the classifier gives that record alone, a request of many records in one answer."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ecgml.runtime.threads import THREAD_ENV_VARS
from ecgml.tracking.pyfunc import EcgClassifier
from tests.mlflow_store import seeded_sqlite_uri
from tests.servers import model_server, post_invocations
from tests.serving.conftest import ecg


@pytest.fixture(scope="module")
def served_by_two(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    import mlflow

    from ecgml.tracking.pyfunc import log_pyfunc

    root = tmp_path_factory.mktemp("serve-workers")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment("serve-workers")
    with mlflow.start_run():
        info = mlflow.register_model(str(log_pyfunc(weights).model_uri), "tiny-workers")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
                                                            "MLFLOW_RUN_ID", "ECGML_THREADS", *THREAD_ENV_VARS)}
    env.update({"MLFLOW_TRACKING_URI": seeded_sqlite_uri(root / "mlflow.db"), "PYTHONWARNINGS": "ignore",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    with model_server(f"models:/tiny-workers/{info.version}", root, env, timeout_s=240, workers=2) as port:
        yield port


def test_two_workers_answer_concurrent_requests_as_the_classifier_does(served_by_two: int, weights: Path) -> None:
    records = [(ecg(100, seconds=4 + k % 7) * (0.6 + 0.1 * k)).tolist() for k in range(12)]
    expected = EcgClassifier(weights).predict_proba([{"signal": r, "fs": 100} for r in records])

    def ask(k: int) -> tuple[int, dict]:
        return post_invocations(served_by_two, {"dataframe_records": [{"signal": records[k], "fs": 100}]})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(len(records))))
    for k, (status, body) in enumerate(answers):
        assert status == 200, body
        np.testing.assert_allclose(list(body["predictions"][0].values()), expected[k], rtol=0, atol=1e-5)
    status, body = post_invocations(served_by_two, {"dataframe_records": [{"signal": r, "fs": 100} for r in records]})
    assert status == 200 and len(body["predictions"]) == len(records)
    np.testing.assert_allclose([list(p.values()) for p in body["predictions"]], expected, rtol=0, atol=1e-5)
