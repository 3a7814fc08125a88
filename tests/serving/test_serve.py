"""A real ``mlflow models serve`` of a registered ecgml model: answers in mV, and every 400 starts with
ecgml's one-line reason (not MLflow's "Failed to predict data '<DataFrame dump>'")."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mlflow_store import seeded_sqlite_uri
from tests.servers import model_server, post_invocations
from tests.serving.conftest import ecg as _ecg


def _env(root: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # uvicorn
    return {**inherited, "MLFLOW_TRACKING_URI": seeded_sqlite_uri(root / "mlflow.db"), "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore", "PATH": path}


#: The per-request limit the served model of this module runs under (raised or lowered as a user would).
REQUEST_LIMIT = 100_000


def serve(root: Path, uri: str, **env: str) -> Iterator[int]:
    """Start ``mlflow models serve -m uri`` in ``root`` (``env`` added to its environment); yield its port once
    /ping answers; stop it."""
    with model_server(uri, root, {**_env(root), **env}, timeout_s=180) as port:
        yield port


@pytest.fixture(scope="module")
def served(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    import mlflow

    root = tmp_path_factory.mktemp("serve")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment("serve")
    with mlflow.start_run():
        info = mlflow.register_model(log_pyfunc_uri(weights), "tiny")
    yield from serve(root, f"models:/tiny/{info.version}", ECGML_MAX_REQUEST_SAMPLES=str(REQUEST_LIMIT))


def log_pyfunc_uri(weights: Path) -> str:
    from ecgml.tracking.pyfunc import log_pyfunc

    return str(log_pyfunc(weights).model_uri)


@pytest.mark.slow
def test_served_model_answers_in_mv_and_puts_its_reason_first(served: int) -> None:
    status, body = post_invocations(served, {"dataframe_records": [{"signal": _ecg(500).tolist(), "fs": 500}]})
    assert status == 200, body
    assert set(body["predictions"][0]) == {"CD", "HYP", "MI", "NORM", "STTC"}

    micro = {"signal": (_ecg() * 1000).tolist(), "fs": 100}
    cases = [
        ([micro], "row 0: signal amplitude", "looks like microvolts or raw ADC counts"),
        ([{"signal": (_ecg() / 1000).tolist(), "fs": 100}], "row 0: signal amplitude", "looks like volts"),
        ([{"signal": _ecg().T.tolist(), "fs": 100}], "row 0: signal looks transposed", "x.T.tolist()"),
        ([], "the request holds no records", "'signal' and 'fs'"),
        ([{"signal": _ecg(100, 1.0).tolist(), "fs": 100}], "row 0: 1.00 s is shorter", "2.50 s input"),
        ([{"signal": _ecg()[:11].tolist(), "fs": 100}], "row 0: missing lead(s) V6", ""),
        ([{"signal": _ecg(100).tolist(), "fs": 100}, micro], "row 1: signal amplitude", ""),
        ([{"signal": _ecg().tolist(), "fs": 100, "leads": [[n] for n in "ABCDEFGHIJKL"]}],
         "row 0: leads must be a list of lead names (strings)", ""),
        ([{"signal": _ecg(100).tolist(), "fs": 100}] * 9, "the request holds 108,000 samples in 9 record(s), more "
         f"than the {REQUEST_LIMIT:,} accepted per request", "ECGML_MAX_REQUEST_SAMPLES"),
    ]
    for records, first, also in cases:
        status, body = post_invocations(served, {"dataframe_records": records})
        assert status == 400, (first, status, body)
        assert body["message"].startswith(first), body["message"][:300]
        assert also in body["message"] and "Failed to predict" not in body["message"]
        assert "stack_trace" not in body and "\n" not in body["message"]

    status, body = post_invocations(served, {"dataframe_records": [{**micro, "amplitude_bounds_mv": [100, 15000]}]})
    assert status == 200, body  # the documented override for a device outside the bounds
    nan = _ecg().tolist()
    nan[2][5] = float("nan")
    status, body = post_invocations(served, {"dataframe_records": [{"fs": 100, "signal": nan}]})  # JSON's NaN token
    assert status == 400 and body["message"].startswith("row 0: signal holds NaN"), body
