"""`ecgml predict` on the real sample: WFDB and Challenge records, folders, broken and mis-scaled records
listed with their reason while the rest are predicted, exactly as the server would judge them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ecgml.predict import PredictError, find_records, predict


@pytest.fixture
def model_uri(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    import mlflow

    from ecgml.tracking.pyfunc import log_pyfunc

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("predict")
    with mlflow.start_run():
        info = log_pyfunc(weights)
    return str(info.model_uri)


def _copy(real: Path, names: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        for path in real.glob(f"{name}.*"):
            shutil.copy(path, dest / path.name)


@pytest.mark.real_sample
def test_predict_reads_wfdb_and_challenge_records_and_lists_failures(
        model_uri: str, real_ptbxl: Path, real_g12ec: Path, tmp_path: Path) -> None:
    from ecgml.cli import main

    mixed = tmp_path / "mixed"
    _copy(real_ptbxl / "records100" / "00000", ["00001_lr", "00002_lr", "00003_lr"], mixed)
    _copy(real_g12ec, ["E07500", "E00009"], mixed / "georgia")
    (mixed / "00002_lr.dat").write_bytes((mixed / "00002_lr.dat").read_bytes()[:1000])  # truncated signal file
    header = (mixed / "00003_lr.hea").read_text().replace("1000.0(0)/mV", "1.0(0)/mV")  # a header whose gain lies
    (mixed / "00003_lr.hea").write_text(header)
    hr = real_ptbxl / "records500" / "00000" / "00001_hr"  # a record path without extension, outside the folder

    out = tmp_path / "out.csv"
    done = CliRunner().invoke(main, ["predict", "--model", model_uri, "--out", str(out), str(mixed), str(hr),
                                     str(tmp_path / "nowhere")])
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"predicted 4 of 6 record(s) -> {out} (1 refused, 1 unreadable)")
    assert "skipped: " in done.output and "nowhere: no such record" in done.output
    table = pd.read_csv(out, dtype={"record_id": str}).set_index("record_id")
    assert list(table.columns[5:]) == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert set(table.index) == {"00001_lr", "00002_lr", "00003_lr", "E07500", "E00009", "00001_hr"}
    ok = table[table["status"] == "ok"]
    assert set(ok.index) == {"00001_lr", "E07500", "E00009", "00001_hr"}
    assert ok[["CD", "HYP", "MI", "NORM", "STTC"]].notna().all().all()
    assert table.loc["00001_hr", "fs"] == 500 and table.loc["E07500", "seconds"] == 10.0
    assert "gain of 4880/mV, read as 1000/mV" in table.loc["E00009", "problems"]
    assert table.loc["00002_lr", "status"] == "unreadable" and "00002_lr.dat" in table.loc["00002_lr", "problems"]
    assert table.loc["00003_lr", "status"] == "refused"
    assert "looks like microvolts or raw ADC counts" in table.loc["00003_lr", "problems"]
    assert table.loc[["00002_lr", "00003_lr"], ["CD", "MI"]].isna().all().all()
    assert "predict:" not in done.output  # no progress bar when the output is not a terminal

    # The same records through the library: the same answers.
    again = predict(model_uri, [mixed / "00001_lr.hea", mixed / "georgia" / "E07500.mat"], tmp_path / "two.csv")
    two = pd.read_csv(again.out, dtype={"record_id": str}).set_index("record_id")
    columns = ["path", "status", "fs", "seconds", "CD", "HYP", "MI", "NORM", "STTC"]
    pd.testing.assert_frame_equal(two.loc[["00001_lr", "E07500"], columns], table.loc[["00001_lr", "E07500"], columns])


def test_nothing_to_predict_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert find_records([tmp_path / "empty"]) == ([], [f"{tmp_path / 'empty'}: a folder with no .hea header at any "
                                                       "depth"])
    with pytest.raises(PredictError, match=r"no record found in .*empty"):
        predict("models:/x/1", [tmp_path / "empty"], tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_a_model_uri_without_version_or_alias_says_so(tmp_path: Path) -> None:
    import numpy as np

    from ecgml.data.formats import write_wfdb_record
    from ecgml.data.leads import STANDARD_LEADS

    write_wfdb_record(tmp_path, "r1", np.zeros((12, 1000), np.float32) + 0.1, 100, list(STANDARD_LEADS))
    with pytest.raises(PredictError, match=r"models:/clf: name a version or an alias: models:/clf/VERSION or "
                                           r"models:/clf@ALIAS"):
        predict("models:/clf", [tmp_path], tmp_path / "out.csv")
