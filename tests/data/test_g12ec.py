"""G12EC reader on the real records (both header dialects) and on deliberately odd ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from ecgml.data.folds import iterative_stratification
from ecgml.data.formats import read_matv4, write_challenge_record
from ecgml.data.labels import load_label_map
from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.sources.g12ec import foreign_database, parse_dx, read_g12ec


def _dx_lines(root: Path) -> dict[str, list[str]]:
    out = {}
    for path in sorted(root.glob("*.hea")):
        line = next(ln for ln in path.read_text().splitlines() if ln.lstrip("# ").startswith("Dx"))
        out[path.stem] = line.split(":", 1)[1].strip().split(",")
    return out


def test_real_records_labels_and_metadata(real_g12ec: Path, tmp_path: Path) -> None:
    dataset = read_g12ec(real_g12ec, folds_path=tmp_path / "folds.csv")
    assert len(dataset.records) == 12
    dx = _dx_lines(real_g12ec)
    lmap = load_label_map("challenge")
    for row in dataset.records.itertuples():
        assert list(row.codes) == dx[row.record_id]
        assert row.labels == lmap.from_snomed(dx[row.record_id])
    by_id = dataset.records.set_index("record_id")
    assert by_id.loc["E00666", "labels"] == ("ISCAN", "NDT")
    assert by_id.loc["E07509", "labels"] == ("CRBBB",)  # coded 59118001 (RBBB): CRBBB under `challenge`
    assert by_id.loc["E00009", "age"] == 76 and by_id.loc["E00009", "sex"] == "Male"
    assert by_id.loc["E00009", "header_dialect"] == "2020" and by_id.loc["E07500", "header_dialect"] == "2021"
    assert [p.kind for p in dataset.problems] == ["gain_corrected"]  # E00009 declares 4880/mV


def test_seed_map_ignores_rbbb_59118001(real_g12ec: Path, tmp_path: Path) -> None:
    dataset = read_g12ec(real_g12ec, label_map="seed", folds_path=tmp_path / "folds.csv")
    by_id = dataset.records.set_index("record_id")
    assert by_id.loc["E07509", "labels"] == ()
    assert by_id.loc["E00666", "labels"] == ("ISCAN", "NDT")  # 428750005 is NDT under `seed`
    assert by_id.loc["E00009", "labels"] == ("NDT",)


def test_real_signals_equal_wfdb_and_gain_defect_is_corrected(real_g12ec: Path, tmp_path: Path) -> None:
    dataset = read_g12ec(real_g12ec, folds_path=tmp_path / "folds.csv")
    for record_id in dataset.records["record_id"]:
        signal = dataset.load_signal(record_id)
        assert signal.shape == (12, 5000) and signal.dtype == np.float32
        if record_id.startswith("E075"):
            expected, _ = wfdb.rdsamp(str(real_g12ec / record_id))
            np.testing.assert_allclose(signal, expected.T, atol=1e-6)
    raw = read_matv4(real_g12ec / "E00009.mat").data
    np.testing.assert_allclose(dataset.load_signal("E00009"), raw / 1000.0, atol=1e-6)  # not raw / 4880
    lead_ii = dataset.load_signal("E00009", ["II"])[0]
    assert 0.5 < np.ptp(lead_ii) < 5.0  # a plausible QRS in mV; read at 4880/mV it would be ~0.3


def _tree(tmp_path: Path, records: dict[str, str], dialect: str = "2021") -> Path:
    root = tmp_path / "tree"
    signal = np.zeros((12, 500), np.float32)
    signal[:, ::50] = 1.0
    for record_id, dx in records.items():
        write_challenge_record(root / "g1", record_id, signal, 500, STANDARD_LEADS,
                               comments=["Age: 60", "Sex: Female", f"Dx: {dx}", "Rx: Unknown"],
                               dialect=dialect)
    return root


def test_foreign_records_are_refused_unless_asked(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"E00001": "164873001", "HR00001": "164873001", "JS00001": "164873001",
                            "A0001": "164873001", "Q0001": "164873001", "S0001": "164873001",
                            "I0001": "164873001"})
    dataset = read_g12ec(root, folds_path=tmp_path / "f.csv")
    assert dataset.records["record_id"].tolist() == ["E00001"]
    refused = {p.record_id: p.message for p in dataset.problems if p.kind == "foreign_record"}
    assert len(refused) == 6 and "PTB-XL record, not Georgia" in refused["HR00001"]
    assert "Chapman-Shaoxing" in refused["JS00001"]
    everything = read_g12ec(root, allow_foreign=True, folds_path=tmp_path / "f2.csv")
    assert len(everything.records) == 7
    assert (everything.records["source"] != "g12ec").sum() == 6


def test_foreign_refusals_read_well_and_name_the_flag_only_where_there_is_one(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ecgml.cli import main

    root = _tree(tmp_path, {"E00001": "164873001", "E00002": "426783006", "X0001": "164873001",
                            "HR00001": "164873001"})
    dataset = read_g12ec(root, folds_path=tmp_path / "f.csv")
    refused = {p.record_id: p.message for p in dataset.problems if p.kind == "foreign_record"}
    assert refused["X0001"].endswith("id 'X0001' is a record of an unknown database, not Georgia; refused")
    assert all("allow_foreign" not in m and "a an " not in m for m in refused.values())
    out = CliRunner().invoke(main, ["data", "prepare", "--source", "g12ec", "--root", str(root), "--fs", "100",
                                    "--splits", "1-8/9/10", "--cache-dir", str(tmp_path / "cache")])
    assert "2 record(s) of other databases refused; --allow-foreign lets" in out.output


def test_duplicate_unknown_and_missing_dx(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"E00001": "164873001,164873001, 270492004", "E00002": "999999999,164873001",
                            "E00003": "426783006"}, dialect="2020")
    (root / "g1" / "E00004.hea").write_text((root / "g1" / "E00003.hea").read_text()
                                            .replace("E00003", "E00004").replace("#Dx: 426783006\n", ""))
    shutil.copy(root / "g1" / "E00003.mat", root / "g1" / "E00004.mat")
    (root / "g1" / "E00005.hea").write_text((root / "g1" / "E00003.hea").read_text().replace("E00003", "E00005"))
    dataset = read_g12ec(root, folds_path=tmp_path / "f.csv")
    by_id = dataset.records.set_index("record_id")
    assert by_id.loc["E00001", "codes"] == ("164873001", "270492004")
    assert by_id.loc["E00001", "labels"] == ("1AVB", "LVH")
    assert by_id.loc["E00002", "labels"] == ("LVH",)
    kinds = {p.record_id: p.kind for p in dataset.problems}
    assert kinds == {"E00001": "duplicate_codes", "E00002": "unknown_snomed", "E00004": "missing_dx",
                     "E00005": "missing_file"}
    assert "999999999" in next(p.message for p in dataset.problems if p.kind == "unknown_snomed")
    assert set(by_id.index) == {"E00001", "E00002", "E00003"}


def test_folds_are_built_once_stored_and_reused(tmp_path: Path) -> None:
    codes = ["164873001", "270492004", "426783006", "164934002"]
    records = {f"E{i:05d}": codes[i % 4] + ("," + codes[(i * 7) % 4] if i % 3 else "") for i in range(1, 61)}
    root = _tree(tmp_path, records)
    first = read_g12ec(root)  # stored beside the data by default
    stored = root / "ecgml_folds.csv"
    assert stored.is_file() and (root / "ecgml_folds.json").is_file()
    before = stored.read_bytes()
    again = read_g12ec(root)
    assert stored.read_bytes() == before
    assert first.records["fold"].tolist() == again.records["fold"].tolist()
    assert sorted(first.records["fold"].unique()) == list(range(1, 11))
    write_challenge_record(root / "g2", "E09999", np.ones((12, 500), np.float32), 500, STANDARD_LEADS,
                           comments=["Dx: 164873001"])
    with pytest.raises(ValueError, match="do not cover 1 record"):
        read_g12ec(root)
    rebuilt = read_g12ec(root, rebuild_folds=True)
    assert len(rebuilt.records) == 61


def test_iterative_stratification_spreads_rare_labels() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random((2000, 6)) < [0.5, 0.2, 0.05, 0.01, 0.3, 0.1]
    folds = iterative_stratification(labels, n_folds=10, seed=3)
    assert folds.min() == 1 and folds.max() == 10
    sizes = np.bincount(folds)[1:]
    assert sizes.max() - sizes.min() <= 2
    for j in range(labels.shape[1]):
        per_fold = np.bincount(folds[labels[:, j]], minlength=11)[1:]
        assert per_fold.max() - per_fold.min() <= 2, (j, per_fold)
    np.testing.assert_array_equal(folds, iterative_stratification(labels, n_folds=10, seed=3))


def test_id_prefixes() -> None:
    assert foreign_database("E00001") is None
    assert foreign_database("HR00001") == "PTB-XL"
    assert foreign_database("JS00001").startswith("Chapman")
    assert foreign_database("S0001") == "PTB"
    assert foreign_database("X1") == "an unknown database"
    assert parse_dx(" 1, 2 ,1,,3") == (["1", "2", "3"], ["1"])


def test_empty_tree_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no usable G12EC record among 0 header"):
        read_g12ec(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        read_g12ec(tmp_path / "nope")


def test_stratified_subset_keeps_label_proportions() -> None:
    from ecgml.data.folds import stratified_subset

    rng = np.random.default_rng(2)
    labels = rng.random((3000, 5)) < [0.4, 0.1, 0.03, 0.01, 0.2]
    subset = stratified_subset(labels, 0.1, seed=7)
    assert abs(len(subset) - 300) <= 3
    np.testing.assert_allclose(labels[subset].sum(0), labels.sum(0) * 0.1, atol=1.01)
    np.testing.assert_array_equal(subset, stratified_subset(labels, 0.1, seed=7))
    assert not np.array_equal(subset, stratified_subset(labels, 0.1, seed=8))
    assert len(stratified_subset(labels, 1.0)) == 3000
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        stratified_subset(labels, 1.5)
