"""PTB-XL reader: label tasks and folds on the whole real metadata, signals and labels on the sample."""

from __future__ import annotations

import ast
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from ecgml.data.labels import load_label_map
from ecgml.data.records import SplitSpec
from ecgml.data.sources.ptbxl import parse_scp_codes, read_ptbxl


@pytest.fixture(scope="module")
def full(real_ptbxl_metadata: Path) -> dict[str, object]:
    """Every task read once over the complete official metadata (21,837 rows, no signals)."""
    tasks = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm", "shared18")
    return {t: read_ptbxl(real_ptbxl_metadata, task=t, check_files=False) for t in tasks}


def _class_counts(dataset) -> dict[str, int]:
    return dict(zip(dataset.classes, dataset.label_matrix().sum(axis=0).tolist(), strict=True))


def test_superdiagnostic_counts_on_the_whole_dataset(full) -> None:
    counts = _class_counts(full["superdiagnostic"])
    assert counts == {"NORM": 9528, "MI": 5486, "STTC": 5250, "CD": 4907, "HYP": 2655}


def test_task_class_counts_match_strodthoff(full) -> None:
    sizes = {task: len(d.classes) for task, d in full.items()}
    assert sizes == {"all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5,
                     "form": 19, "rhythm": 12, "shared18": 18}
    assert len(full["all"].records) == 21837
    assert len(full["all"].labelled()) == 21837
    assert len(full["diagnostic"].labelled()) == len(full["superdiagnostic"].labelled())


def test_no_patient_spans_two_folds(full) -> None:
    table = full["all"].records
    assert table.groupby("patient_id")["fold"].nunique().max() == 1
    assert table["patient_id"].nunique() == 18885
    assert sorted(table["fold"].unique()) == list(range(1, 11))


def test_shared18_counts_equal_the_challenge_tables(full, real_challenge: Path) -> None:
    """The Challenge converted PTB-XL to SNOMED; our `challenge` map must give its PTB_XL counts."""
    tables = pd.concat([pd.read_csv(real_challenge / f"dx_mapping_{k}.csv") for k in ("scored", "unscored")])
    per_code = dict(zip(tables["SNOMEDCTCode"].astype(str), tables["PTB_XL"], strict=True))
    lmap = load_label_map("challenge")
    counts = _class_counts(full["shared18"])
    for cls in lmap.classes:
        expected = sum(per_code[code] for code in lmap.snomed_codes[cls])
        assert counts[cls] == expected == lmap.ptbxl_counts[cls], cls


def test_seed_map_counts(real_ptbxl_metadata: Path) -> None:
    seed = read_ptbxl(real_ptbxl_metadata, task="shared18", label_map="seed", check_files=False)
    counts = _class_counts(seed)
    assert counts == dict(load_label_map("seed").ptbxl_counts)
    assert counts["LVH"] == 2137 and counts["NDT"] == 1829  # SCP LVH and NDT alone


def test_splits_are_folds_1_8_9_10_by_default(full) -> None:
    dataset = full["superdiagnostic"]
    sizes = {s: len(dataset.split(s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == len(dataset.records)
    assert set(dataset.split("test")["fold"]) == {10} and set(dataset.split("val")["fold"]) == {9}
    custom = SplitSpec.parse("1-7,10/8/9")
    assert custom.train == (1, 2, 3, 4, 5, 6, 7, 10) and custom.test == (9,)
    with pytest.raises(ValueError, match="more than one split"):
        SplitSpec.parse("1-9/9/10")
    with pytest.raises(ValueError, match="more than one split"):
        SplitSpec.parse("1-8/9,10/10")  # validation overlapping test in part is a mistake
    same = SplitSpec.parse("1-9/10/10")  # the original's G12EC choice: validation is the test fold
    assert same.val == same.test == (10,)


def test_sample_labels_equal_the_csv(real_ptbxl: Path) -> None:
    dataset = read_ptbxl(real_ptbxl, fs=100, task="all")
    csv = pd.read_csv(real_ptbxl / "ptbxl_database.csv")
    assert len(dataset.records) == 100 and not dataset.problems
    for row, expected in zip(dataset.records.itertuples(), csv.itertuples(), strict=True):
        codes = ast.literal_eval(expected.scp_codes)
        assert row.record_id == str(expected.ecg_id)
        assert set(row.labels) == set(codes)
        assert row.codes == codes
        assert row.fold == expected.strat_fold
        assert row.path.endswith(expected.filename_lr)
    assert dataset.load_signal("1").shape == (12, 1000)


def test_500hz_reports_the_records_it_cannot_find(real_ptbxl: Path) -> None:
    dataset = read_ptbxl(real_ptbxl, fs=500, task="superdiagnostic")
    assert len(dataset.records) == 20
    missing = [p for p in dataset.problems if p.kind == "missing_file"]
    assert len(missing) == 80 and "00021_hr.hea" in missing[0].message
    assert dataset.load_signal("20").shape == (12, 5000)


def test_newer_signal_tree_under_older_table(real_ptbxl: Path, tmp_path: Path) -> None:
    """A v1.0.1 table over a v1.0.3-like tree that lacks records: reported, not a crash."""
    root = tmp_path / "ptbxl"
    shutil.copytree(real_ptbxl, root)
    for ecg_id in (5, 17, 42):
        for suffix in (".hea", ".dat"):
            (root / "records100" / "00000" / f"{ecg_id:05d}_lr{suffix}").unlink()
    dataset = read_ptbxl(root, fs=100, task="rhythm")
    assert len(dataset.records) == 97
    assert sorted(p.record_id for p in dataset.problems) == ["17", "42", "5"]


def test_bad_scp_codes_are_counted_not_fatal(real_ptbxl: Path, tmp_path: Path) -> None:
    root = tmp_path / "ptbxl"
    shutil.copytree(real_ptbxl, root)
    csv = pd.read_csv(root / "ptbxl_database.csv")
    csv.loc[0, "scp_codes"] = "{'NORM': 'high'}"
    csv.loc[1, "scp_codes"] = "__import__('os').system('echo pwned')"
    csv.loc[2, "scp_codes"] = "{'NOT_A_STATEMENT': 100.0, 'NORM': 100.0}"
    csv.to_csv(root / "ptbxl_database.csv", index=False)
    dataset = read_ptbxl(root, fs=100, task="superdiagnostic")
    kinds = Counter(p.kind for p in dataset.problems)
    assert kinds == {"bad_scp_codes": 2, "unknown_scp_statement": 1}
    assert len(dataset.records) == 98
    assert any("ecg_id 1:" in p.message and "'high'" in p.message for p in dataset.problems)


def test_parse_scp_codes_is_strict() -> None:
    assert parse_scp_codes("{'NORM': 100.0, 'SR': 0}") == {"NORM": 100.0, "SR": 0.0}
    for bad in ("[1, 2]", "{'A': True}", "{1: 2.0}", "not python", "{'A': 1"):
        with pytest.raises(ValueError):
            parse_scp_codes(bad)


def test_missing_columns_and_bad_arguments(real_ptbxl: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="250 Hz"):
        read_ptbxl(real_ptbxl, fs=250)
    with pytest.raises(ValueError, match="unknown PTB-XL task"):
        read_ptbxl(real_ptbxl, task="everything")
    with pytest.raises(FileNotFoundError, match=r"ptbxl_database\.csv: not found"):
        read_ptbxl(tmp_path)
    root = tmp_path / "p"
    shutil.copytree(real_ptbxl, root)
    pd.read_csv(root / "ptbxl_database.csv").drop(columns="strat_fold").to_csv(
        root / "ptbxl_database.csv", index=False)
    with pytest.raises(ValueError, match="missing column"):
        read_ptbxl(root)
