"""``--target folder`` through the CLI as a user types it: ``data stats``, then ``train-standalone`` and ``finetune``
with ``--cv`` on a folder labelled by a ``labels.csv`` with patient ids, a rare label and a record shorter than the
crop among them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ecgml.cli import main
from ecgml.data.formats import write_challenge_record, write_wfdb_record
from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.synth import generate_cpsc
from tests.data.trees import write_tiny_ptbxl

TINY = ("--backbone", "xresnet1d18", "--backbone-kwargs", json.dumps({"width": 0.25, "layers": [1, 1]}),
        "--batch-size", "8")


def _folder(root: Path, cpsc: Path) -> None:
    """The synthetic CPSC records moved into a user's own layout (WFDB and Challenge files, two wards), with a
    labels.csv that names AF / RBBB / other, groups records by patient, and adds a label seen once."""
    from ecgml.data.records import load_signal
    from ecgml.data.sources.cinc import read_cinc

    table = read_cinc(cpsc, min_positives=1).records
    rows = []
    for i, rec in enumerate(table.itertuples()):
        signal = load_signal(rec.path)
        name, ward = f"ecg{i:03d}", root / f"ward{i % 2}"
        if i % 3:
            write_wfdb_record(ward, name, signal, 500, STANDARD_LEADS)
        else:
            write_challenge_record(ward, name, signal, 500, STANDARD_LEADS)
        label = "AF" if "164889003" in rec.codes else "RBBB" if "59118001" in rec.codes else "other"
        rows.append({"record": f"ward{i % 2}/{name}", "labels": label + (";odd" if i == 0 else ""),
                     "patient": f"p{i // 2}"})
    write_wfdb_record(root / "ward0", "short", signal[:, :500], 500, STANDARD_LEADS)  # 1 s: shorter than the crop
    rows.append({"record": "short", "labels": "AF", "patient": "p-short"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("folder")
    generate_cpsc(base / "cpsc", 48, seed=4, workers=1, progress=False, seconds=12.0,
                  priors={"AF": 0.4, "RBBB": 0.4})
    _folder(base / "mine", base / "cpsc")
    return base / "mine"


def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("ECGML_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return store


def test_data_stats_lists_the_folders_classes_and_the_rare_label(folder: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _env(tmp_path, monkeypatch)
    result = CliRunner().invoke(main, ["data", "stats", "--source", "folder", "--root", str(folder),
                                       "--min-positives", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "odd" in result.output and "AF" in result.output and "RBBB" in result.output


@pytest.mark.slow
def test_standalone_and_finetune_cross_validate_a_labelled_folder(folder: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    store = _env(tmp_path, monkeypatch)
    runner = CliRunner()
    args = ["--target", "folder", "--root", str(folder), "--cv", "2", "--min-positives", "2", "--epochs", "1", *TINY]
    standalone = runner.invoke(main, ["train-standalone", *args], catch_exceptions=False)
    assert standalone.exit_code == 0, standalone.output
    output = standalone.output + (standalone.stderr if hasattr(standalone, "stderr") else "")
    assert "shorter than the 2.5 s crop (e.g. ward0/short: 1 s)" in output  # the record, named by its path
    assert "left out: odd (1)" in output  # the label seen once, with its count
    parent = re.findall(r"^run: ([0-9a-f]{32})$", standalone.output, flags=re.MULTILINE)
    assert len(parent) == 1
    oof = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent[0], artifact_path="oof_predictions.csv",
                                                          tracking_uri=store))
    assert len(oof) == 49 and {c for c in oof.columns if c.startswith("prob_")} == {
        "prob_AF", "prob_RBBB", "prob_other"}
    folds = pd.read_csv(folder / "ecgml_folds_cv2.csv", dtype=str)
    patients = pd.read_csv(folder / "labels.csv", dtype=str).assign(
        record_id=lambda t: t["record"].where(t["record"].str.contains("/"), "ward0/" + t["record"]))
    merged = folds.merge(patients, on="record_id")
    assert len(merged) == 49 and merged.groupby("patient")["fold"].nunique().max() == 1  # patient-wise folds

    ptbxl = write_tiny_ptbxl(tmp_path / "ptbxl", n=40)
    pretrained = runner.invoke(main, ["pretrain", "--root", str(ptbxl), "--task", "superdiagnostic", "--epochs", "1",
                                      "--experiment", "folder-pre", *TINY], catch_exceptions=False)
    assert pretrained.exit_code == 0, pretrained.output
    registered = runner.invoke(main, ["register", "--experiment", "folder-pre", "--name", "bb"])
    assert registered.exit_code == 0, registered.output
    # a target prepared with other leads than the backbone's is refused before any cache, naming both
    misfit = runner.invoke(main, ["finetune", *args, "--backbone-uri", "models:/bb/1", "--leads", "6"])
    assert misfit.exit_code == 1 and "the target has I,II,III,aVR,aVL,aVF (pass --leads I,II" in misfit.output
    tuned = runner.invoke(main, ["finetune", *args, "--backbone-uri", "models:/bb/1", "--strategy", "linear"],
                          catch_exceptions=False)
    assert tuned.exit_code == 0, tuned.output
    parent = re.findall(r"^run: ([0-9a-f]{32})$", tuned.output, flags=re.MULTILINE)
    run = mlflow.MlflowClient(store).get_run(parent[0])
    assert run.data.params["target"] == "folder" and 0.0 <= run.data.metrics["test_macro_auc"] <= 1.0
