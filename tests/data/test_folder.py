"""The ``folder`` source: a user's own WFDB or Challenge records anywhere under a root, labelled by their headers or
a ``labels.csv``; and each bad input of the issue's list with its own clear message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.formats import write_challenge_record, write_wfdb_record
from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.prepare import prepare
from ecgml.data.sources import get_dataset_source
from ecgml.data.sources.folder import read_folder, split_labels


def _signal(seed: int, seconds: float = 10.0, fs: int = 500, leads: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0, 0.02, (leads, round(seconds * fs))), axis=1).astype(np.float32)


def write_folder(root: Path, labels: list[str], *, header_labels: bool = True, fs: int = 500,
                 seconds: float = 10.0, lead_names: tuple[str, ...] = STANDARD_LEADS) -> list[str]:
    """``len(labels)`` WFDB records in two sub-folders (``ward{i % 2}/rec{i}``), each labelled ``labels[i]`` in a
    ``# Labels:`` comment when ``header_labels``; returns their ids."""
    ids = []
    for i, label in enumerate(labels):
        comments = [f"Labels: {label}"] if header_labels else []
        write_wfdb_record(root / f"ward{i % 2}", f"rec{i}", _signal(i, seconds, fs, len(lead_names)), fs, lead_names,
                          comments=comments)
        ids.append(f"ward{i % 2}/rec{i}")
    return ids


def _prepare(root: Path, cache: Path, **data: object) -> object:
    return prepare(PrepareConfig(data=DataConfig(source="folder", root=root, task="own", **data),  # type: ignore[arg-type]
                                 cache_dir=cache), progress=False)


def test_header_labels_of_wfdb_and_challenge_records_at_any_depth(tmp_path: Path) -> None:
    write_folder(tmp_path, ["AF; RBBB", "AF", "normal,AF"] * 2)
    write_challenge_record(tmp_path / "deep" / "er", "x1", _signal(9), 500, STANDARD_LEADS, comments=["Dx: AF,RBBB"])
    dataset = read_folder(tmp_path, min_positives=2)
    records = dataset.records.set_index("record_id")
    assert list(records.index) == ["deep/er/x1", "ward0/rec0", "ward0/rec2", "ward0/rec4", "ward1/rec1",
                                   "ward1/rec3", "ward1/rec5"]
    assert records.loc["ward0/rec0", "codes"] == ("AF", "RBBB")  # '# Labels:' taken as written, ';' or ','
    assert records.loc["deep/er/x1", "codes"] == ("164889003", "59118001")  # '#Dx:' read as the Challenge does
    assert dataset.classes == ("AF", "RBBB", "normal") and dataset.label_space["dropped"] == {
        "164889003": 1, "59118001": 1}
    assert get_dataset_source("folder").own_label_space
    assert split_labels(" a ;b,, a ") == ("a", "b")


def test_labels_csv_by_path_or_base_name_with_patients(tmp_path: Path) -> None:
    ids = write_folder(tmp_path, ["x"] * 6, header_labels=False)
    rows = ["record,labels,patient"] + [f"{rid if i % 2 else rid.split('/')[1] + '.hea'},{'A;B' if i < 3 else 'B'},"
                                        f"p{i // 2}" for i, rid in enumerate(ids)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    dataset = read_folder(tmp_path, min_positives=1, cv=2, cv_fold=1)
    records = dataset.records.set_index("record_id")
    assert records.loc["ward0/rec0", "codes"] == ("A", "B") and records.loc["ward1/rec5", "codes"] == ("B",)
    assert records.loc["ward0/rec2", "patient_id"] == "p1" == records.loc["ward1/rec3", "patient_id"]
    # patient-wise folds: both records of a patient in the same outer fold
    for patient, group in dataset.records.groupby("patient_id"):
        assert group["cv_outer_fold"].nunique() == 1, patient


def test_a_folder_with_no_labelled_record_says_where_labels_go(tmp_path: Path) -> None:
    write_folder(tmp_path, ["x"] * 3, header_labels=False)
    with pytest.raises(ValueError, match=r"none of the 3 record\(s\) has a label: no header has a '# Labels: A,B'.*"
                                         r"labels\.csv \(columns record, labels\[, patient\]\)"):
        read_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "lonely.hea").write_text("lonely 1 500 10\nlonely.dat 16 1000/mV 16 0 0 0 0 I\n")  # no .dat beside it
    with pytest.raises(ValueError, match=r"no readable WFDB or Challenge record .* among 1 header\(s\) .*missing_file"):
        read_folder(empty)


def test_a_label_seen_once_is_dropped_with_its_count_and_no_class_left_is_an_error(tmp_path: Path) -> None:
    write_folder(tmp_path, ["A", "A", "A", "rare"])
    dataset = read_folder(tmp_path, min_positives=2)
    assert dataset.classes == ("A",) and dataset.label_space["dropped"] == {"rare": 1}
    with pytest.raises(ValueError, match=r"no class has at least 5 positive records \(--min-positives\); the most "
                                         "frequent has 3"):
        _prepare(tmp_path, tmp_path / "cache", min_positives=5)
    assert not (tmp_path / "cache").exists()  # refused before any cache was written


def test_labels_csv_naming_absent_records_names_the_csv_and_the_first_ids(tmp_path: Path) -> None:
    write_folder(tmp_path, ["x"] * 2, header_labels=False)
    absent = [f"gone{i}" for i in range(7)]
    (tmp_path / "labels.csv").write_text("record,labels\nrec0,A\n" + "".join(f"{r},A\n" for r in absent))
    with pytest.raises(ValueError) as raised:
        read_folder(tmp_path, min_positives=1)
    message = str(raised.value)
    assert str(tmp_path / "labels.csv") in message and "7 record(s) it names are not under" in message
    assert "gone0, gone1, gone2, gone3, gone4 and 2 more" in message
    (tmp_path / "labels.csv").write_text("id,diagnosis\nrec0,A\n")
    with pytest.raises(ValueError, match=r"labels\.csv: needs columns record and labels .*it has id, diagnosis"):
        read_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("record,labels\nrec0,A\nward0/rec0.hea,B\n")
    with pytest.raises(ValueError, match=r"labels\.csv: rows 'rec0' and 'ward0/rec0' both name record ward0/rec0"):
        read_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("record,labels\nrec1,A\n./rec1,B\n")
    with pytest.raises(ValueError, match=r"labels\.csv: record\(s\) rec1 are listed more than once"):
        read_folder(tmp_path)


def test_another_rate_is_resampled_and_missing_leads_are_refused_naming_them(tmp_path: Path) -> None:
    write_folder(tmp_path / "slow", ["A"] * 4, fs=250, seconds=8.0)
    prepared = _prepare(tmp_path / "slow", tmp_path / "cache", min_positives=1)
    assert set(prepared.dataset.records["fs"]) == {250}  # type: ignore[attr-defined]
    assert set(prepared.cache.records["n_valid"]) == {800}  # type: ignore[attr-defined]  # 8 s at the 100 Hz cache
    six = ("I", "II", "III", "aVR", "aVL", "aVF")
    write_folder(tmp_path / "limb", ["A"] * 3, lead_names=six)
    with pytest.raises(ValueError, match=r"every record failed to load.*missing lead\(s\) V1, V2, V3, V4, V5, V6; "
                                         r"the record has I, II, III, aVR, aVL, aVF"):
        _prepare(tmp_path / "limb", tmp_path / "cache", min_positives=1)
    caches = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))  # not the locks
    assert len(caches) == 1 and caches[0].startswith("folder-100hz-12leads-")  # the good one; nothing half-written
    six_leads = prepare(PrepareConfig(data=DataConfig(source="folder", root=tmp_path / "limb", task="own",
                                                      min_positives=1), leads="6", cache_dir=tmp_path / "cache"),
                        progress=False)
    assert six_leads.cache.signals.shape[1] == 6  # asked for the leads it has, it reads


def test_cv_larger_than_the_rarest_class_allows_names_cv_and_the_class(tmp_path: Path) -> None:
    write_folder(tmp_path, ["A", "A", "A", "B", "B", "A"])
    with pytest.raises(ValueError, match=r"--cv 3 needs at least 3 positive records of every class, but B \(2\)"):
        read_folder(tmp_path, min_positives=2, cv=3, cv_fold=1)
    with pytest.raises(ValueError, match="a folder source has none"):
        read_folder(tmp_path, tranches=("A",))
