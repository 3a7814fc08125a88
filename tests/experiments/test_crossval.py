"""``--cv K`` end to end on the 20 real first-release CPSC records: one parent run printed as ``run: <id>``, a child
per fold, the pooled out-of-fold AUC with its interval and ``oof_predictions.csv`` on the parent; on SQLite and on
a real ``mlflow server`` over HTTP."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ecgml.cli import main
from tests.conftest import REAL_SAMPLE

FIRST_RELEASE = REAL_SAMPLE / "cinc" / "challenge-2020" / "Training_WFDB"
TINY = ("--backbone", "xresnet1d18", "--backbone-kwargs", json.dumps({"width": 0.25, "layers": [1, 1]}),
        "--batch-size", "8")


def test_cross_validation_logs_one_parent_with_pooled_out_of_fold_predictions(
        store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not FIRST_RELEASE.is_dir():
        pytest.skip(f"real Challenge sample {FIRST_RELEASE} is absent (set ECGML_REAL_SAMPLE)")
    import mlflow

    root = tmp_path / "cpsc"
    shutil.copytree(FIRST_RELEASE, root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("ECGML_DATA", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["train-standalone", "--target", "cinc", "--root", str(root), "--cv", "3",
                                       "--min-positives", "3", "--epochs", "1", *TINY], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ids = re.findall(r"^run: ([0-9a-f]{32})$", result.output, flags=re.MULTILINE)
    assert len(ids) == 1, result.output  # the parent's id, on a line of its own, once
    client = mlflow.MlflowClient(store)
    parent = client.get_run(ids[0])
    metrics = parent.data.metrics
    assert metrics["test_macro_auc_low"] <= metrics["test_macro_auc"] <= metrics["test_macro_auc_high"]
    assert {f"test_auc_{c}" for c in ("164889003", "59118001", "426783006", "429622005")} <= set(metrics)
    assert parent.data.tags["ecgml.cv"] == "3" and parent.data.params["cv"] == "3"
    assert parent.data.params["target"] == "cinc"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{ids[0]}'")
    assert sorted(c.data.tags["ecgml.cv_fold"] for c in children) == ["1", "2", "3"]
    oof = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=ids[0], artifact_path="oof_predictions.csv",
                                                          tracking_uri=store), dtype={"record_id": str})
    # every labelled record once (4 of the 20 carry only dropped classes), with its fold and the columns per class
    assert len(oof) == 16 and oof["record_id"].is_unique and set(oof["fold"]) == {1, 2, 3}
    assert [c for c in oof.columns if c.startswith("prob_")] == [
        "prob_164889003", "prob_59118001", "prob_426783006", "prob_429622005"]
    figures = {a.path for a in client.list_artifacts(ids[0], "folds/fold1")}
    assert "folds/fold1/roc_test.png" in figures


def test_cv_larger_than_the_rarest_class_allows_is_one_clear_line(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if not FIRST_RELEASE.is_dir():
        pytest.skip(f"real Challenge sample {FIRST_RELEASE} is absent (set ECGML_REAL_SAMPLE)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ECGML_DATA", str(tmp_path / "data"))
    root = tmp_path / "cpsc"
    shutil.copytree(FIRST_RELEASE, root)
    result = CliRunner().invoke(main, ["train-standalone", "--target", "cinc", "--root", str(root), "--cv", "5",
                                       "--min-positives", "3", "--epochs", "1", *TINY])
    assert result.exit_code == 1
    assert "--cv 5 needs at least 5 positive records of every class" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "data" / "cache").exists()  # refused before any cache was written
    result = CliRunner().invoke(main, ["train-standalone", "--target", "g12ec", "--cv", "3"])
    assert result.exit_code == 2 and "--cv are for sources with their own label space (cinc, folder)" in result.output
