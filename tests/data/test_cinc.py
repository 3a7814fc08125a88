"""The ``cinc`` reader on every layout of the real Challenge sample, the target's own label space, K-fold
folds, and the refusal of PTB-XL's re-published records (skipped, saying why, without the sample)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.dx_mapping import dx_code
from ecgml.data.label_space import select_classes
from ecgml.data.prepare import prepare
from ecgml.data.sources import get_dataset_source, overlap_refusal, records_of_source
from ecgml.data.sources.cinc import check_tranches, read_cinc, tranche_of
from tests.conftest import REAL_SAMPLE

CINC = REAL_SAMPLE / "cinc"
FIRST_RELEASE = CINC / "challenge-2020" / "Training_WFDB"
LAYOUT_2021 = CINC / "challenge-2021" / "training"
STANDALONE = CINC / "ecg-arrhythmia" / "WFDBRecords"
#: The 20 first-release CPSC records' abbreviations, as their headers write them (read off the real files).
FIRST_RELEASE_DX = Counter({"AF": 6, "RBBB": 4, "Normal": 3, "STD": 3, "LBBB": 2, "PVC": 2})


@pytest.fixture
def cinc() -> Path:
    if not CINC.is_dir():
        pytest.skip(f"real Challenge sample {CINC} is absent (set ECGML_REAL_SAMPLE to the shared/real-sample folder)")
    return CINC


def _codes(dataset: object) -> Counter:
    return Counter(c for codes in dataset.records["codes"] for c in codes)  # type: ignore[attr-defined]


def test_abbreviations_map_through_the_challenge_tables() -> None:
    assert dx_code("AF") == "164889003" and dx_code("af") == "164889003"
    assert dx_code("Normal") == "426783006"  # the first release's spelling of NSR
    assert dx_code("I-AVB") == "270492004"  # the first release's spelling of IAVB
    assert dx_code("59118001") == "59118001" and dx_code("no such thing") is None
    assert [tranche_of(i) for i in ("JS00001", "S0001", "HR00001", "A0001", "E00001", "I0001", "X1")] == [
        "JS", "S", "HR", "A", "E", "I", "?"]
    with pytest.raises(ValueError, match=r"unknown tranche.*ZZ.*JS \(Chapman"):
        check_tranches(["JS", "ZZ"])


def test_first_release_abbreviations_give_the_same_codes_as_the_2021_relabelling(cinc: Path) -> None:
    first = read_cinc(FIRST_RELEASE, min_positives=3)
    assert len(first.records) == 20 and set(first.records["header_dialect"]) == {"2020"}
    assert first.problems == []
    expected = Counter({dx_code(a): n for a, n in FIRST_RELEASE_DX.items()})
    assert _codes(first) == expected
    # the classes are the target's own codes with >= 3 positives; the rest are listed with their counts
    assert first.classes == ("164889003", "59118001", "426783006", "429622005")
    assert first.label_space["dropped"] == {"164909002": 2, "427172004": 2}
    # the same ten recordings as the 2021 release codes them in SNOMED CT
    relabelled = read_cinc(LAYOUT_2021 / "cpsc_2018", min_positives=1)
    again = first.records.set_index("record_id").loc[relabelled.records["record_id"], "codes"]
    differ = [rid for rid, ours, theirs in zip(relabelled.records["record_id"], again, relabelled.records["codes"],
                                               strict=True) if ours != theirs]
    assert differ == ["A0005"]  # PVC 427172004 in 2020, ventricular ectopics 164884008 in 2021: the Challenge's own


def test_every_2021_database_and_the_standalone_release_read(cinc: Path) -> None:
    tranches = {"cpsc_2018": "A", "cpsc_2018_extra": "Q", "georgia": "E", "chapman_shaoxing": "JS", "ningbo": "JS",
                "ptb": "S", "ptb-xl": "HR"}
    for folder, prefix in tranches.items():
        dataset = read_cinc(LAYOUT_2021 / folder, min_positives=1)
        assert set(dataset.records["tranche"]) == {prefix}, folder
        assert dataset.records["codes"].map(len).gt(0).all(), folder
    ptb = read_cinc(LAYOUT_2021 / "ptb", min_positives=1).records
    assert set(ptb["fs"]) == {1000} and ptb["n_samples"].max() == 115200
    standalone = read_cinc(STANDALONE, min_positives=1)  # WFDBRecords/01/010/, three levels down, with RECORDS
    assert sorted(standalone.records["record_id"]) == ["JS00001", "JS00002", "JS00004", "JS00005"]


def test_the_whole_tree_reports_duplicates_and_filters_tranches(cinc: Path) -> None:
    everything = read_cinc(cinc, min_positives=1)
    kinds = Counter(p.kind for p in everything.problems)
    # 2021's cpsc_2018 re-publishes A0001-A0010 of the first release; the stand-alone release four JS records
    assert kinds == Counter({"duplicate_record": 14})
    assert Counter(everything.records["tranche"]) == Counter({"A": 20, "JS": 20, "E": 10, "Q": 10, "HR": 3, "S": 2})
    only = read_cinc(cinc, tranches=("js", "S"), min_positives=1)
    assert set(only.records["tranche"]) == {"JS", "S"} and len(only.records) == 22
    assert Counter(p.kind for p in only.problems)["other_tranche"] == 20 + 10 + 10 + 3  # A, E, Q, HR (first copies)
    with pytest.raises(ValueError, match=r"no usable Challenge record of tranche\(s\) I"):
        read_cinc(cinc, tranches=("I",))


def test_flat_chest_leads_and_rates_are_counted_by_the_cache(cinc: Path, tmp_path: Path) -> None:
    ningbo = PrepareConfig(DataConfig(source="cinc", root=LAYOUT_2021 / "ningbo", task="own", min_positives=2),
                           cache_dir=tmp_path / "cache")
    assert ningbo.seconds == get_dataset_source("cinc").cache_seconds == 30.0
    prepared = prepare(ningbo, progress=False)
    assert prepared.cache.manifest["records_with_flat_leads"] == 3
    ptb = prepare(PrepareConfig(DataConfig(source="cinc", root=LAYOUT_2021 / "ptb", task="own", min_positives=1),
                                cache_dir=tmp_path / "cache"), progress=False)
    # 1000 Hz resampled to 100 Hz: 38.4 s and 115.2 s, both capped at the 30 s a row holds
    assert prepared.cache.signals.shape[-1] == ptb.cache.signals.shape[-1] == 3000
    assert list(ptb.cache.records["n_valid"]) == [3000, 3000]
    space = (ptb.cache.path / "labels").glob("*/label_space.json")
    assert len(list(space)) == 1  # the label space travels with the cache


def test_cv_folds_are_stored_stratified_and_refused_when_a_class_is_too_rare(cinc: Path, tmp_path: Path) -> None:
    root = tmp_path / "cpsc"
    shutil.copytree(FIRST_RELEASE, root)
    fold_tables = [read_cinc(root, min_positives=3, cv=3, cv_fold=k).records for k in (1, 2, 3)]
    stored = pd.read_csv(root / "ecgml_folds_cv3.csv", dtype={"record_id": str})
    assert len(stored) == 20 and set(stored["fold"]) == {1, 2, 3}
    tested = [set(t.loc[t["fold"] == 3, "record_id"]) for t in fold_tables]
    assert set().union(*tested) == set(stored["record_id"]) and sum(map(len, tested)) == 20  # each record once
    for table in fold_tables:  # every class has a positive in every test fold
        test = table[table["fold"] == 3]
        assert {c for labels in test["labels"] for c in labels} == {"164889003", "59118001", "426783006",
                                                                    "429622005"}
        assert set(table["fold"]) == {1, 3}
    with pytest.raises(ValueError, match=r"--cv 4 needs at least 4 positive records of every class.*426783006 \(3\)"):
        read_cinc(root, min_positives=3, cv=4, cv_fold=1)


def test_label_space_rules() -> None:
    codes = [("a", "b"), ("a",), ("a", "c"), ("b",)]
    space = select_classes(codes, min_positives=2)
    assert space.classes == ("a", "b") and space.counts == {"a": 3, "b": 2} and space.dropped == {"c": 1}
    explicit = select_classes(codes, classes=("c", "a"))
    assert explicit.classes == ("c", "a") and explicit.dropped == {"b": 2} and explicit.name != space.name
    with pytest.raises(ValueError, match=r"class\(es\) z given with --classes have no positive record"):
        select_classes(codes, classes=("z",))
    assert select_classes(codes, min_positives=5).classes == ()


def test_a_label_seen_too_rarely_is_a_clear_error_for_training(cinc: Path, tmp_path: Path) -> None:
    config = PrepareConfig(DataConfig(source="cinc", root=FIRST_RELEASE, task="own"), cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"no class has at least 10 positive records.*most frequent has 6"):
        prepare(config, progress=False)
    assert not (tmp_path / "cache").exists()  # refused before any cache is built


def test_ptbxl_records_of_the_challenge_are_named_for_a_ptbxl_backbone(cinc: Path) -> None:
    dataset = read_cinc(cinc, min_positives=1)
    assert records_of_source(dataset, "ptbxl") == ["HR00001", "HR00002", "HR00003"]
    reason = overlap_refusal(dataset, "ptbxl", "models:/ecgml-ptbxl-backbone/1")
    assert reason and "3 record(s) (e.g. HR00001" in reason and "--allow-overlap" in reason
    assert overlap_refusal(read_cinc(cinc, tranches=("A",), min_positives=1), "ptbxl", "x") is None
    assert records_of_source(dataset, "g12ec") == []
