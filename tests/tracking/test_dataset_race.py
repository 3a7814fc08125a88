"""Two runs of ``--jobs N`` logging the same split at once: the one that loses the insert links the other's row."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pandas as pd
import pytest

from ecgml.tracking.runs import log_split_inputs
from tests.tracking.test_mlflow_run import use_store

SPLIT = pd.DataFrame({"record_id": ["a", "b"], "patient_id": ["1", "2"], "fold": [1, 2]})


@contextmanager
def _rival_inserts_first(database: Path) -> Iterator[list[str]]:
    """Just before this process inserts a dataset row, another writer commits the same row: the interleaving
    of two processes that both looked the dataset up before either inserted it (MLflow's lookup and insert
    are not atomic). Yields the statements the rival ran."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    rival: list[str] = []

    def before(conn, cursor, statement: str, parameters, context, executemany) -> None:
        if rival or not statement.lstrip().upper().startswith("INSERT INTO DATASETS"):
            return
        row = parameters[0] if executemany else parameters
        with closing(sqlite3.connect(database)) as other, other:
            other.execute(statement, (uuid.uuid4().hex, *tuple(row)[1:]))
        rival.append(statement)

    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield rival
    finally:
        event.remove(Engine, "before_cursor_execute", before)


def _dataset_rows(database: Path, name: str) -> int:
    with closing(sqlite3.connect(database)) as con:
        return con.execute("SELECT COUNT(*) FROM datasets WHERE name = ?", (name,)).fetchone()[0]


def test_a_dataset_another_writer_inserted_first_is_linked_not_refused(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    database = tmp_path / "mlflow.db"
    use_store(monkeypatch, f"sqlite:///{database}")
    experiment = mlflow.create_experiment("race")

    with mlflow.start_run(experiment_id=experiment), _rival_inserts_first(database) as rival:
        dataset = mlflow.data.from_pandas(SPLIT, source=str(tmp_path), name="raw-test", digest="raw-test")
        with pytest.raises(MlflowException, match="UNIQUE constraint failed: datasets"):
            mlflow.log_input(dataset, context="test")  # what the second of two workers met without the retry
    assert rival

    with mlflow.start_run(experiment_id=experiment) as run, _rival_inserts_first(database) as rival:
        log_split_inputs({"test": SPLIT}, name="cinc-own", source=str(tmp_path), digest="3575d38bf485")
    assert rival, "the interleaving did not happen, so the retry was not tested"
    inputs = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.tags[0].value) for i in inputs] == [("cinc-own-test", "test")]
    assert _dataset_rows(database, "cinc-own-test") == 1  # the rival's row, linked, not a second copy


def test_other_refusals_of_a_dataset_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    calls: list[str] = []

    def refuse(dataset, context=None, tags=None, model=None) -> None:
        calls.append(dataset.name)
        raise MlflowException("(sqlite3.OperationalError) disk I/O error")

    monkeypatch.setattr(mlflow, "log_input", refuse)
    with pytest.raises(MlflowException, match="disk I/O error"):
        log_split_inputs({"test": SPLIT}, name="cinc-own", source=str(tmp_path), digest="3575d38bf485")
    assert calls == ["cinc-own-test"]
