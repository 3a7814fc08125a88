"""Bad records are named, counted in the statistics, and never reach or corrupt a cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.formats import write_challenge_record
from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.prepare import prepare
from ecgml.data.stats import dataset_stats, format_stats
from tests.data.trees import write_tiny_ptbxl


def _break_ptbxl(root: Path) -> None:
    folder = root / "records100" / "00000"
    (folder / "00002_lr.dat").unlink()  # header present, signal file missing
    (folder / "00003_lr.hea").unlink()  # record listed in the table, not on disk
    dat = folder / "00004_lr.dat"
    dat.write_bytes(dat.read_bytes()[:5000])  # truncated
    hea = folder / "00005_lr.hea"
    hea.write_text(hea.read_text().replace("00005_lr 12 100 1000", "00005_lr 12 100 1200"))  # lies about length
    hea = folder / "00006_lr.hea"
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join([lines[0].replace(" 12 ", " 11 "), *lines[1:12]]) + "\n")  # lies about lead count
    table = pd.read_csv(root / "ptbxl_database.csv")
    table.loc[table["ecg_id"] == 7, "scp_codes"] = "{'NORM': 'likely'}"  # non-numeric likelihood
    table.to_csv(root / "ptbxl_database.csv", index=False)


def test_every_kind_of_bad_ptbxl_record_is_counted_and_named(tmp_path: Path) -> None:
    root = write_tiny_ptbxl(tmp_path / "ptbxl", n=30)
    _break_ptbxl(root)
    config = PrepareConfig(DataConfig("ptbxl", root, task="superdiagnostic"), cache_dir=tmp_path / "cache")
    prepared = prepare(config, progress=False)
    stats = dataset_stats(prepared)
    problems = stats["problems"]
    assert problems["missing_file"]["records"] == 1 and "00003_lr.hea" in problems["missing_file"]["example"]
    assert problems["bad_scp_codes"]["records"] == 1 and "'likely'" in problems["bad_scp_codes"]["example"]
    unreadable = {d["record_id"]: d["reason"] for d in prepared.cache.manifest["dropped"]}
    assert set(unreadable) == {"2", "4", "5", "6"}
    assert "00002_lr.dat: signal file not found" in unreadable["2"]
    assert "00004_lr.dat: truncated" in unreadable["4"]
    assert "00005_lr.dat: truncated: header promises 12 signals x 1200 samples" in unreadable["5"]
    assert "00006_lr.dat: longer than its header says: header promises 11 signals" in unreadable["6"]
    assert problems["unreadable_signal"]["records"] == 4
    assert stats["records_cached"] == 30 - 1 - 1 - 4
    assert prepared.cache.signals.shape[0] == stats["records_cached"]
    assert np.isfinite(np.asarray(prepared.cache.signals)).all()
    text = format_stats(stats)
    assert "unreadable_signal: 4 records (4 dropped)" in text and "bad_scp_codes: 1 records" in text


def test_bad_g12ec_records_are_counted(tmp_path: Path) -> None:
    root = tmp_path / "g12ec"
    rng = np.random.default_rng(0)
    for i in range(1, 21):
        dx = "164873001,59118001" if i % 2 else "270492004"
        if i == 3:
            dx = "270492004,123456789"  # unknown code
        if i == 4:
            dx = "270492004,270492004"  # duplicate
        signal = rng.normal(0, 0.3, (12, 5000)).astype(np.float32)
        if i == 5:
            signal[4] = np.nan
        write_challenge_record(root, f"E{i:05d}", signal, 500, STANDARD_LEADS,
                               comments=["Age: 61", "Sex: Male", f"Dx: {dx}"])
    write_challenge_record(root, "HR00001", rng.normal(size=(12, 5000)).astype(np.float32), 500, STANDARD_LEADS,
                           comments=["Dx: 270492004"])
    config = PrepareConfig(DataConfig("g12ec", root), cache_dir=tmp_path / "cache")
    stats = dataset_stats(prepare(config, progress=False))
    problems = stats["problems"]
    assert problems["unknown_snomed"]["records"] == 1 and "123456789" in problems["unknown_snomed"]["example"]
    assert problems["duplicate_codes"]["records"] == 1 and problems["duplicate_codes"]["dropped"] == 0
    assert problems["foreign_record"]["records"] == 1 and "HR00001" in problems["foreign_record"]["example"]
    assert stats["records_with_nan"] == 1 and stats["nan_samples"] == 5000
    assert stats["records_with_flat_leads"] == 1  # the NaN lead became a flat zero lead
    assert stats["records_cached"] == 20
    maps = stats["label_maps"]
    assert maps["challenge"]["CRBBB"] == 9 and maps["seed"]["CRBBB"] == 0  # 59118001 only counts under challenge
    total = sum(stats["label_counts"][s]["records"] for s in ("train", "val", "test"))
    assert total == 20
