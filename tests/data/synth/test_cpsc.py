"""CPSC 2018-shaped Challenge trees: the classes the heart model draws are measurable on the waveform, and the
``cinc`` reader reads the tree back with the right labels, lengths and rate, in both ``#Dx`` dialects."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ecgml.data.dx_mapping import dx_code
from ecgml.data.formats import read_header
from ecgml.data.sources.cinc import header_fields, read_cinc
from ecgml.data.synth import generate_cpsc, generate_g12ec, measure
from ecgml.data.synth.config import SynthConfig
from ecgml.data.synth.cpsc import CPSC_CLASSES, CPSC_FS, CPSC_MIN_SECONDS
from ecgml.data.synth.diagnoses import ST_TERRITORIES
from tests.data.synth.helpers import SEEDS, clean, pair


@pytest.mark.parametrize("seed", SEEDS)
def test_premature_atrial_beats_come_early_and_reset_the_sinus_node(seed: int) -> None:
    ecg = clean(["SR", "PAC"], seed)
    rr = np.diff(ecg.schedule.qrs_onset)
    normal = np.median(rr)
    early = rr < 0.75 * normal
    assert early.any(), rr
    assert np.isfinite(ecg.schedule.p_onset).all()  # every premature beat has its P wave
    # the beat after a premature one follows it by about one RR: no compensatory pause
    after = rr[1:][early[:-1]]
    assert np.all(np.abs(after - normal) < 0.1 * normal), (rr, normal)


@pytest.mark.parametrize("seed", SEEDS)
def test_premature_ventricular_beats_are_early_wide_and_without_p(seed: int) -> None:
    ecg = clean(["SR", "PVC"], seed)
    assert ecg.params.ectopic is not None and ecg.params.ectopic.qrs_duration >= 0.13
    sinus = ecg.schedule.qrs_onset
    blocked = np.isnan(sinus) & np.isfinite(ecg.schedule.p_onset)
    assert blocked.any()  # the sinus beat each ectopic one interrupts is not conducted
    assert ecg.ectopic is not None and np.isnan(ecg.ectopic.p_onset).all()  # no P wave of their own
    inside = [t for t in ecg.ectopic.qrs_onset if 0.5 < t < 9.5]
    assert inside
    # early: each comes before the sinus beat it replaces would have, within the RR before it
    conducted = np.sort(sinus[np.isfinite(sinus)])
    for t in inside:
        before = conducted[conducted < t]
        assert before.size and t - before[-1] < 0.75 * np.median(np.diff(conducted))
    # wide: its QRS, measured on the signal, is wider than the sinus beats' by more than 20 ms
    beats = measure.measure_record(ecg.signal, ecg.fs, ecg.schedule)
    sinus_width = np.median([b.qrs_duration for b in beats])
    for t in inside:
        start, end = measure.qrs_bounds(ecg.signal, ecg.fs, float(t))
        assert end - start > sinus_width + 0.02, (t, end - start, sinus_width)


@pytest.mark.parametrize(("concept", "sign"), [("STE_", 1.0), ("STD_", -1.0)])
def test_st_shifts_are_in_their_territory(concept: str, sign: float) -> None:
    for seed in SEEDS:
        (ne, nb), (se, sb) = pair([concept], seed)
        leads = ST_TERRITORIES[int(se.params.notes["st_territory"])]
        shift = np.mean([measure.st_level(se.signal, se.fs, sb, lead) - measure.st_level(ne.signal, ne.fs, nb, lead)
                         for lead in leads])
        assert sign * shift >= 0.08, (concept, seed, shift)


@pytest.fixture(scope="module")
def cpsc_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "cpsc"
    generate_cpsc(root, 60, seed=5, workers=1, progress=False)
    return root


def test_the_cinc_reader_reads_the_tree_with_its_labels_lengths_and_rate(cpsc_tree: Path) -> None:
    dataset = read_cinc(cpsc_tree, min_positives=1)
    records = dataset.records
    assert dataset.problems == []
    assert len(records) == 60 and records["record_id"].tolist() == [f"A{i:04d}" for i in range(1, 61)]
    assert set(records["tranche"]) == {"A"} and set(records["fs"]) == {CPSC_FS}
    assert set(records["header_dialect"]) == {"2020"}
    seconds = records["n_samples"] / CPSC_FS
    assert seconds.min() >= CPSC_MIN_SECONDS and seconds.max() <= 60.0 and seconds.nunique() > 30  # variable
    # every label is read back as the code the header's abbreviation names, and matches the marker's counts
    marker = json.loads((cpsc_tree / "SYNTH.json").read_text())["label_counts"]
    read = Counter(c for codes in records["codes"] for c in codes)
    for cls in CPSC_CLASSES:
        assert read[cls.code] == marker.get(f"class:{cls.abbreviation}", 0), cls
    for record in records.itertuples():
        written = header_fields(read_header(f"{record.path}.hea"))["Dx"].split(",")
        assert tuple(dx_code(a) for a in written) == record.codes
        assert set(written) <= {c.abbreviation for c in CPSC_CLASSES}
    assert len(set(read) & {c.code for c in CPSC_CLASSES}) >= 6  # most of the nine classes in 60 records


def test_the_snomed_dialect_gives_the_same_codes(cpsc_tree: Path, tmp_path: Path) -> None:
    generate_cpsc(tmp_path / "snomed", 60, seed=5, workers=1, progress=False, dx_dialect="snomed")
    first = read_cinc(cpsc_tree, min_positives=1).records
    second = read_cinc(tmp_path / "snomed", min_positives=1).records
    assert second["codes"].tolist() == first["codes"].tolist()
    assert second["n_samples"].tolist() == first["n_samples"].tolist()
    assert all("/g1/" in p for p in second["path"])  # the 2021 layout's subfolders
    dx = header_fields(read_header(Path(second["path"][0] + ".hea")))["Dx"]
    assert all(part.isdigit() for part in dx.split(","))


def test_bad_cpsc_options_are_refused_and_other_trees_are_unchanged(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown CPSC class 'XYZ'"):
        SynthConfig.for_source("cpsc", 5, priors={"XYZ": 0.1})
    with pytest.raises(ValueError, match="dx_dialect must be one of"):
        SynthConfig.for_source("cpsc", 5, dx_dialect="latin")
    with pytest.raises(ValueError, match="seconds must be within 6-60"):
        SynthConfig.for_source("cpsc", 5, seconds=3.0)
    with pytest.raises(ValueError, match="dx_dialect is an option of CPSC-shaped trees"):
        SynthConfig.for_source("g12ec", 5, dx_dialect="snomed")
    # a Georgia tree's marker names no CPSC option, so trees generated before CPSC existed keep their digest
    generate_g12ec(tmp_path / "g", 2, seed=0, workers=1, progress=False)
    config = json.loads((tmp_path / "g" / "SYNTH.json").read_text())["config"]
    assert "dx_dialect" not in config and config["seconds"] == 10.0
