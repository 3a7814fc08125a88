"""The synthetic trees are in the real formats, deterministic, and patient-respecting."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecgml.data.formats import read_dat16, read_header, read_matv4, to_physical
from ecgml.data.labels import snomed_vocabulary
from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.sources.g12ec import header_fields, parse_dx, read_g12ec
from ecgml.data.sources.ptbxl import read_ptbxl
from ecgml.data.synth import generate_g12ec, generate_ptbxl
from ecgml.data.synth.metadata import PTBXL_COLUMNS
from ecgml.data.synth.writers import PTBXL_LEAD_NAMES, decimate_to_100


@pytest.fixture(scope="module")
def ptbxl_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "ptbxl"
    generate_ptbxl(root, 40, seed=3, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def g12ec_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "g12ec"
    generate_g12ec(root, 40, seed=4, workers=1, progress=False, header_2020_fraction=0.3)
    return root


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_ptbxl_database_has_the_real_columns_in_the_real_order(ptbxl_tree: Path) -> None:
    table = pd.read_csv(ptbxl_tree / "ptbxl_database.csv")
    assert tuple(table.columns) == PTBXL_COLUMNS
    assert len(table) == 40 and table["ecg_id"].tolist() == list(range(1, 41))
    first = (ptbxl_tree / "ptbxl_database.csv").read_text().splitlines()[1].split(",")
    assert first[1].endswith(".0")  # patient_id written as a float, as PTB-XL does
    for codes in table["scp_codes"]:
        parsed = ast.literal_eval(codes)
        assert isinstance(parsed, dict) and parsed
        assert all(isinstance(v, float) for v in parsed.values())
    assert set(table["strat_fold"]) <= set(range(1, 11))
    assert table.loc[table["strat_fold"] >= 9, "validated_by_human"].all()


def test_ptbxl_columns_match_the_real_file(ptbxl_tree: Path, real_ptbxl: Path) -> None:
    real = pd.read_csv(real_ptbxl / "ptbxl_database.csv", nrows=1)
    assert tuple(real.columns) == PTBXL_COLUMNS
    ours = pd.read_csv(ptbxl_tree / "scp_statements.csv", index_col=0)
    theirs = pd.read_csv(real_ptbxl / "scp_statements.csv", index_col=0)
    assert list(ours.columns) == list(theirs.columns)
    pd.testing.assert_frame_equal(ours, theirs.loc[ours.index])


def test_no_patient_is_in_two_folds_and_some_have_several_records(tmp_path: Path) -> None:
    generate_ptbxl(tmp_path, 300, seed=5, sampling_rates=(100,), workers=1, progress=False, noise=None)
    table = pd.read_csv(tmp_path / "ptbxl_database.csv")
    assert (table.groupby("patient_id")["strat_fold"].nunique() == 1).all()
    assert table["patient_id"].value_counts().max() > 1
    assert table["strat_fold"].nunique() == 10
    assert not (tmp_path / "records500").exists()


def test_ptbxl_records_read_with_wfdb_and_with_our_readers(ptbxl_tree: Path) -> None:
    table = pd.read_csv(ptbxl_tree / "ptbxl_database.csv")
    for rel_lr, rel_hr in table[["filename_lr", "filename_hr"]].head(5).itertuples(index=False):
        lr, lr_fields = wfdb.rdsamp(str(ptbxl_tree / rel_lr))
        hr, hr_fields = wfdb.rdsamp(str(ptbxl_tree / rel_hr))
        assert lr.shape == (1000, 12) and hr.shape == (5000, 12)
        assert lr_fields["fs"] == 100 and hr_fields["fs"] == 500
        assert lr_fields["sig_name"] == list(PTBXL_LEAD_NAMES)
        header = read_header(ptbxl_tree / f"{rel_lr}.hea")
        ours = to_physical(read_dat16(ptbxl_tree / f"{rel_lr}.dat", header), [s.gain for s in header.signals],
                           [s.baseline for s in header.signals])
        np.testing.assert_allclose(ours, lr.T, atol=1e-6)
        # the 100 Hz file is the anti-aliased decimation of the 500 Hz one (up to 1 uV quantisation)
        np.testing.assert_allclose(decimate_to_100(hr.T), lr.T, atol=2e-3)
        assert 0.2 < np.ptp(hr[:, 1]) < 8.0  # millivolts, a plausible lead II


def test_decimation_keeps_ecg_band_and_removes_mains_hum() -> None:
    t = np.arange(5000) / 500.0
    for hz, kept in ((10.0, True), (30.0, True), (50.0, False)):
        low = decimate_to_100(np.sin(2 * np.pi * hz * t)[None, :].astype(np.float32))[0, 100:-100]
        amplitude = np.sqrt(2.0) * low.std()
        assert (amplitude > 0.95) if kept else (amplitude < 0.01), hz


def test_ptbxl_tree_reads_for_every_task(ptbxl_tree: Path) -> None:
    for task in ("superdiagnostic", "diagnostic", "form", "rhythm", "shared18", "all"):
        dataset = read_ptbxl(ptbxl_tree, fs=100, task=task)
        assert len(dataset.records) == 40 and not dataset.problems, task
    assert set(read_ptbxl(ptbxl_tree, task="superdiagnostic").classes) <= {"NORM", "MI", "STTC", "CD", "HYP"}


def test_georgia_tree_layout_headers_and_codes(g12ec_tree: Path) -> None:
    headers = sorted(g12ec_tree.rglob("*.hea"))
    assert [h.stem for h in headers] == [f"E{i:05d}" for i in range(1, 41)]
    assert {h.parent.name for h in headers} == {"g1"}
    vocabulary = snomed_vocabulary()
    dialects = set()
    for path in headers:
        header = read_header(path)
        fields = header_fields(header)
        assert set(fields) >= {"Age", "Sex", "Dx", "Rx", "Hx"}
        assert fields["Sex"] in ("Male", "Female")
        codes, _ = parse_dx(fields["Dx"])
        assert codes and set(codes) <= set(vocabulary)
        assert header.lead_names == list(STANDARD_LEADS) and header.fs == 500 and header.n_samples == 5000
        mat = read_matv4(path.with_suffix(".mat"))
        assert mat.name == "val" and mat.data.shape == (12, 5000) and mat.data.dtype == np.int16
        dialect = "2020" if header.record_name.endswith(".mat") else "2021"
        dialects.add(dialect)
        if dialect == "2021":
            signal, info = wfdb.rdsamp(str(path.with_suffix("")))
            assert signal.shape == (5000, 12) and info["fs"] == 500
            np.testing.assert_allclose(signal.T, mat.data / 1000.0, atol=1e-9)
        else:
            assert header.comment_prefix == "#" and {s.gain for s in header.signals} <= {1000.0, 4880.0}
    assert dialects == {"2020", "2021"}


def test_georgia_folders_hold_a_thousand_records(tmp_path: Path) -> None:
    generate_g12ec(tmp_path, 1001, seed=0, workers=2, progress=False, noise=None)
    assert len(list((tmp_path / "g1").glob("*.hea"))) == 1000
    assert [p.name for p in (tmp_path / "g2").glob("*.hea")] == ["E01001.hea"]
    dataset = read_g12ec(tmp_path)
    assert len(dataset.records) == 1001
    assert dataset.records["labels"].map(len).sum() > 0


def test_the_two_label_maps_see_different_georgia_classes(tmp_path: Path) -> None:
    generate_g12ec(tmp_path, 60, seed=6, workers=1, progress=False, priors={"CRBBB": 0.5})
    challenge = read_g12ec(tmp_path, label_map="challenge").records["labels"].explode().value_counts()
    seed = read_g12ec(tmp_path, label_map="seed", rebuild_folds=True).records["labels"].explode().value_counts()
    assert challenge.get("CRBBB", 0) > 2 * seed.get("CRBBB", 0)


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    generate_ptbxl(tmp_path / "a", 24, seed=9, workers=1, progress=False, chunk_size=5)
    generate_ptbxl(tmp_path / "b", 24, seed=9, workers=2, progress=False, chunk_size=5)
    generate_ptbxl(tmp_path / "c", 24, seed=10, workers=1, progress=False, chunk_size=5)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c
    generate_g12ec(tmp_path / "ga", 12, seed=9, workers=1, progress=False, chunk_size=4)
    generate_g12ec(tmp_path / "gb", 12, seed=9, workers=2, progress=False, chunk_size=4)
    assert _digest(tmp_path / "ga") == _digest(tmp_path / "gb")


def test_summary_marker_and_noise_flags(ptbxl_tree: Path, g12ec_tree: Path) -> None:
    marker = json.loads((ptbxl_tree / "SYNTH.json").read_text())
    assert marker["n_records"] == 40 and marker["config"]["seed"] == 3
    assert marker["config"]["noise"]["powerline_hz"] == 50.0
    georgia = json.loads((g12ec_tree / "SYNTH.json").read_text())
    assert georgia["config"]["noise"]["powerline_hz"] == 60.0
    table = pd.read_csv(ptbxl_tree / "ptbxl_database.csv")
    flagged = table["static_noise"].dropna()
    assert flagged.isin([" , I-AVF,  ", " , alles,  "]).all()


def test_noise_free_option_gives_the_clean_model(tmp_path: Path) -> None:
    generate_ptbxl(tmp_path, 4, seed=2, sampling_rates=(500,), workers=1, progress=False, noise="off")
    table = pd.read_csv(tmp_path / "ptbxl_database.csv")
    assert table[["baseline_drift", "static_noise", "burst_noise", "electrodes_problems"]].isna().all().all()
    signal, _ = wfdb.rdsamp(str(tmp_path / table["filename_hr"][0]))
    np.testing.assert_allclose(signal[:, 2], signal[:, 1] - signal[:, 0], atol=2.5e-3)  # III = II - I


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="100 and/or 500"):
        generate_ptbxl(tmp_path, 3, sampling_rates=(250,), progress=False)
    with pytest.raises(ValueError, match="unknown concept"):
        generate_g12ec(tmp_path, 3, priors={"XYZ": 0.1}, progress=False)
    with pytest.raises(ValueError, match="noise"):
        generate_g12ec(tmp_path, 3, noise="loud", progress=False)


def test_config_takes_the_source_defaults_and_validates() -> None:
    from ecgml.data.synth import G12EC_NOISE, PTBXL_NOISE, NoiseConfig, SynthConfig

    georgia = SynthConfig(source="g12ec", n_records=5)
    assert georgia.sampling_rates == (500,) and georgia.noise == G12EC_NOISE and georgia.age_mean == 61.0
    ptbxl = SynthConfig(source="ptbxl", n_records=5, noise="off", priors=(("LVH", 0.2),))
    assert ptbxl.sampling_rates == (100, 500) and ptbxl.noise == NoiseConfig.off() and ptbxl.noise != PTBXL_NOISE
    assert ptbxl.to_dict()["priors"] == {"LVH": 0.2} and "workers" not in ptbxl.to_dict()
    with pytest.raises(ValueError, match="500 Hz"):
        SynthConfig(source="g12ec", n_records=5, sampling_rates=(100,))
    with pytest.raises(TypeError, match="unknown synth option"):
        SynthConfig.for_source("ptbxl", 5, colour="blue")
