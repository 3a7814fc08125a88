"""The cache's bulk read path: the same rows, facts and errors as the per-record reader, and as wfdb."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecgml.data.cache import bulk
from ecgml.data.cache import rows as cache_rows
from ecgml.data.cache.cache import Cache, build_cache
from ecgml.data.formats import parse_header, write_challenge_record, write_wfdb_record
from ecgml.data.records import Dataset
from ecgml.data.signal import Preprocessing
from ecgml.data.sources.g12ec import read_g12ec
from ecgml.data.sources.ptbxl import read_ptbxl
from tests.data.trees import PTBXL_LEAD_NAMES, write_tiny_ptbxl


def _without_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "lean_header", lambda text, folder: None)
    monkeypatch.setattr(bulk, "quick_header", lambda text, folder: None)


def _both(dataset: Dataset, pre: Preprocessing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          workers: int = 1) -> tuple[Cache, Cache]:
    fast = build_cache(dataset, pre, tmp_path / "fast", progress=False, workers=workers)
    with monkeypatch.context() as patch:
        _without_bulk(patch)
        slow = build_cache(dataset, pre, tmp_path / "slow", progress=False)
    return fast, slow


def _assert_same(fast: Cache, slow: Cache) -> None:
    np.testing.assert_array_equal(np.asarray(fast.signals), np.asarray(slow.signals))
    pd.testing.assert_frame_equal(fast.records, slow.records)
    assert fast.manifest["dropped"] == slow.manifest["dropped"]
    for key in ("mean", "std"):
        np.testing.assert_allclose(fast.manifest["train_stats"][key], slow.manifest["train_stats"][key],
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fs", [100, 500])
def test_cache_of_real_ptbxl_records_equals_wfdb_exactly(real_ptbxl: Path, tmp_path: Path, fs: int) -> None:
    dataset = read_ptbxl(real_ptbxl, fs=fs, task="all")
    cache = build_cache(dataset, Preprocessing(fs=fs), tmp_path / "cache", progress=False)
    assert len(cache.records) == len(dataset.records) and len(cache.records) in (100, 20)
    for record_id, path in zip(dataset.records["record_id"], dataset.records["path"], strict=True):
        expected = wfdb.rdsamp(path)[0].T.astype(np.float32)
        np.testing.assert_array_equal(cache.signals[cache.rows([record_id])[0]], expected, err_msg=path)


def test_real_ptbxl_fast_path_equals_the_per_record_path(real_ptbxl: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = read_ptbxl(real_ptbxl, fs=100, task="all")
    _assert_same(*_both(dataset, Preprocessing(fs=100), tmp_path, monkeypatch))


def test_real_g12ec_cache_equals_wfdb_and_the_per_record_path(real_g12ec: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = read_g12ec(real_g12ec, folds_path=tmp_path / "folds.csv")
    fast, slow = _both(dataset, Preprocessing(fs=500), tmp_path, monkeypatch)
    _assert_same(fast, slow)
    for record_id, path in zip(dataset.records["record_id"], dataset.records["path"], strict=True):
        if dataset.records.set_index("record_id").loc[record_id, "header_dialect"] == "2021":
            expected = wfdb.rdsamp(path)[0].T.astype(np.float32)
            np.testing.assert_array_equal(fast.signals[fast.rows([record_id])[0]], expected, err_msg=path)


def test_lean_header_agrees_with_the_full_parser(real_ptbxl: Path, real_g12ec: Path) -> None:
    paths = [*sorted(real_ptbxl.glob("records*/*/*.hea")), *sorted(real_g12ec.glob("*.hea"))]
    for path in paths:
        text = path.read_text(encoding="latin-1")
        full, lean = parse_header(text, path), bulk.lean_header(text, str(path.parent))
        assert lean is not None, path
        assert (lean.n_sig, lean.fs, lean.n_samples) == (full.n_sig, full.fs, full.n_samples)
        assert lean.gains == tuple(s.gain for s in full.signals)
        assert lean.baselines == tuple(s.baseline for s in full.signals)
        assert lean.checksums == tuple(s.checksum for s in full.signals)
        assert lean.names == tuple(full.lead_names)
        assert lean.data_path == str(path.parent / full.signals[0].file_name)


def _variants(text: str) -> list[str]:
    """Headers a template must not take for its own when the lean parse reads them otherwise."""
    first_line, _, rest = text.partition("\n")
    return [
        text.replace("\n", "\r\n"), text.replace(" ", "  ", 1), text + "# a comment\n", text + "\n\n",
        text + "not a comment\n", text + "# a comment\rnot a comment\n", text.replace(" 16 ", " 16+24 ", 1),
        "a/b" + text[text.index(" "):], "#x" + text[text.index(" "):], " " + text, text.rstrip("\n"),
        first_line + " 05-May-2020 14:50:55\n" + rest, text.replace(".dat ", ".mat ", 1),
        text.replace(".dat ", ".dat\t", 1), text.replace(" 0 I\n", " x I\n"), text.replace("/mV", "/uV", 1),
    ]


def test_quick_header_agrees_with_the_lean_parse(real_ptbxl: Path, real_g12ec: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "_TEMPLATES", [])
    paths = [*sorted(real_ptbxl.glob("records*/*/*.hea")), *sorted(real_g12ec.glob("*.hea"))]
    real = [(p.read_text(encoding="latin-1"), str(p.parent)) for p in paths]
    for text, folder in real:
        assert bulk.quick_header(text, folder) == bulk.lean_header(text, folder), text
    assert 0 < len(bulk._TEMPLATES) < len(real) / 10  # most headers matched a template instead of adding one
    for variant, folder in [(v, f) for text, f in real[:3] + real[-3:] for v in _variants(text)]:
        assert bulk.quick_header(variant, folder) == bulk.lean_header(variant, folder), variant


def _odd_tree(root: Path) -> Path:
    """A tiny PTB-XL tree with one record of every kind the bulk path must hand on or get right."""
    write_tiny_ptbxl(root, n=40)
    folder = root / "records100" / "00000"
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(0, 0.02, (12, 1000)), axis=1).astype(np.float32)
    nan = walk.copy()
    nan[3, 100:140] = np.nan
    write_wfdb_record(folder, "00002_lr", nan, 100, PTBXL_LEAD_NAMES)  # NaN samples: zeroed and counted
    write_wfdb_record(folder, "00003_lr", np.zeros((12, 1000), np.float32), 100, PTBXL_LEAD_NAMES)  # flat
    write_wfdb_record(folder, "00004_lr", walk * 100, 100, PTBXL_LEAD_NAMES)  # implausible amplitude
    one_flat = walk.copy()
    one_flat[5] = 0.0
    write_wfdb_record(folder, "00005_lr", one_flat, 100, PTBXL_LEAD_NAMES)  # one flat lead: kept
    order = [1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 11, 10]
    write_wfdb_record(folder, "00006_lr", walk[order], 100, [PTBXL_LEAD_NAMES[i] for i in order])
    write_wfdb_record(folder, "00007_lr", walk[:11], 100, PTBXL_LEAD_NAMES[:11])  # lead V6 missing
    write_wfdb_record(folder, "00008_lr", walk[:, :800], 100, PTBXL_LEAD_NAMES)  # 8 s: padded
    dat = folder / "00009_lr.dat"
    data = bytearray(dat.read_bytes())
    data[100] ^= 0x01
    dat.write_bytes(bytes(data))  # checksum mismatch
    (folder / "00010_lr.dat").write_bytes((folder / "00010_lr.dat").read_bytes()[:-24])  # truncated
    header = folder / "00011_lr.hea"  # microvolts with a baseline, in the gain field
    header.write_text(header.read_text().replace("1000.0(0)/mV", "1.0(5)/uV"))
    header = folder / "00012_lr.hea"  # an unknown unit
    header.write_text(header.read_text().replace("1000.0(0)/mV", "1000.0(0)/mmHg", 1))
    header = folder / "00013_lr.hea"  # a blank line and a comment: the lean parse hands it on
    header.write_text(header.read_text().replace("\n", "\n\n# a comment\n", 1))
    (folder / "00014_lr.hea").unlink()
    return root


@pytest.mark.parametrize("pre", [Preprocessing(fs=100),
                                 Preprocessing(fs=50, leads=("V6", "II", "I"), seconds=8),
                                 Preprocessing(fs=100, bandpass_low=0.5, bandpass_high=30.0)],
                         ids=["identity", "resampled-leads", "bandpass"])
def test_odd_records_give_the_same_rows_facts_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         pre: Preprocessing) -> None:
    root = _odd_tree(tmp_path / "ptbxl")
    dataset = read_ptbxl(root, fs=100, task="all", check_files=False)
    fast, slow = _both(dataset, pre, tmp_path, monkeypatch, workers=2)
    _assert_same(fast, slow)
    kinds = {d["record_id"]: d["kind"] for d in fast.manifest["dropped"]}
    assert kinds == {"3": "flat_signal", "4": "implausible_amplitude", "7": "missing_lead",
                     "9": "unreadable_signal", "10": "unreadable_signal", "12": "unreadable_signal",
                     "14": "unreadable_signal"}
    table = fast.records.set_index("record_id")
    twelve = len(pre.leads) == 12  # the NaN run is in aVR, the flat lead is aVF
    assert table.loc["2", "nan_count"] == (40 if twelve else 0)
    assert table.loc["5", "flat_leads"] == ("aVF" if twelve else "")
    assert table.loc["8", "n_valid"] == round(800 * pre.fs / 100)


def test_synthetic_g12ec_in_both_dialects_and_the_gain_defect(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "g12ec"
    root.mkdir()
    rng = np.random.default_rng(2)
    for i in range(1, 13):
        n = 5000 if i % 4 else 7500  # a longer record: cropped to the cache length
        signal = np.cumsum(rng.normal(0, 0.01, (12, n)), axis=1).astype(np.float32)
        write_challenge_record(root, f"E{i:05d}", signal, 500, PTBXL_LEAD_NAMES,
                               comments=["Age: 50", "Sex: Male", "Dx: 426783006"],
                               dialect="2020" if i % 3 == 0 else "2021",
                               declared_gain=4880.0 if i == 6 else None)
    dataset = read_g12ec(root, folds_path=tmp_path / "folds.csv")
    for pre in (Preprocessing(fs=500), Preprocessing(fs=100)):
        fast, slow = _both(dataset, pre, tmp_path / str(pre.fs), monkeypatch, workers=2)
        _assert_same(fast, slow)
        assert len(fast.records) == 12 and not fast.manifest["dropped"]
    cache = Cache(next(p for p in (tmp_path / "500" / "fast").iterdir() if not p.name.startswith(".")))
    expected = wfdb.rdsamp(str(root / "E00001"))[0].T.astype(np.float32)
    np.testing.assert_array_equal(cache.signals[cache.rows(["E00001"])[0]], expected)


def test_stats_of_batches_equal_record_by_record_updates() -> None:
    from ecgml.data.signal import RunningStats, row_moments

    rng = np.random.default_rng(3)
    x = (rng.normal(0.3, 0.2, (20, 3, 500))).astype(np.float32)
    one, batched = RunningStats(3), RunningStats(3)
    for row in x:
        one.update(row)
    batched.add_rows(500, *row_moments(x[:7]))
    batched.add_rows(500, *row_moments(x[7:]))
    for a, b in zip(one.result(), batched.result(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_plain_records_take_the_bulk_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_tiny_ptbxl(tmp_path / "ptbxl", n=10)
    calls: list[str] = []
    real = cache_rows._load_one

    def spy(job, offset, block, stats):  # type: ignore[no-untyped-def]
        calls.append(job.paths[offset])
        return real(job, offset, block, stats)

    monkeypatch.setattr(cache_rows, "_load_one", spy)
    cache = build_cache(read_ptbxl(root, fs=100), Preprocessing(fs=100), tmp_path / "c", progress=False)
    assert calls == [] and len(cache.records) == 10


def test_flat_leads_from_digital_extremes_equal_flat_leads_of_the_converted_rows() -> None:
    """The range is read off each lead's extremes instead of the millivolts; around the 1 uV threshold
    (one to three digital units at these gains) the two must agree bit for bit, baselines or not."""
    from ecgml.data.signal import flat_leads

    rng = np.random.default_rng(5)
    gains = np.array([[1000.0, 999.7, 1000.3, 200.0, 4.88, 2000.0, 1001.0, 998.0]], dtype=np.float32)
    for baseline in (0.0, 5.0, -1234.0):
        digital = np.empty((50, gains.shape[1], 300), dtype=np.int16)
        for record in digital:
            for lead in record:
                low = rng.integers(-30000, 30000)
                lead[:] = low + rng.integers(0, rng.integers(1, 5), lead.shape)
        baselines = np.full_like(gains, baseline)
        out = np.empty(digital.shape, dtype=np.float32)
        bulk.to_millivolts(digital, gains, baselines, out)
        got = bulk.flat_from_extremes(digital.min(axis=-1), digital.max(axis=-1), gains, baselines)
        expected = flat_leads(out)
        assert 0 < expected.sum() < expected.size  # both answers occur
        np.testing.assert_array_equal(got, expected)


def test_wrapping_checksums_equal_the_exact_sum_modulo_2_16() -> None:
    rng = np.random.default_rng(6)
    digital = rng.integers(-32768, 32768, (20, 12, 1000)).astype(np.int16)
    exact = digital.sum(axis=-1, dtype=np.int64)
    declared = exact + 65536 * rng.integers(-3, 4, exact.shape)  # WFDB writes the sum as a signed 16-bit
    assert bulk.checksums_match(digital, declared).all()
    declared[7, 3] += 1
    declared[11, 0] -= 65535
    np.testing.assert_array_equal(np.flatnonzero(~bulk.checksums_match(digital, declared)), [7, 11])


def test_a_header_longer_than_one_read_is_read_whole(tmp_path: Path) -> None:
    header = tmp_path / "long.hea"
    text = "long 1 100 10\nlong.dat 16 1000.0(0)/mV 16 0 0 0 0 I\n" + "# note\n" * 30_000
    header.write_text(text)
    assert len(text) > 3 * 65536 and bulk.read_header_text(str(header)) == text
    header.write_text(text[:65536])  # exactly one full read: the next one returns nothing
    assert bulk.read_header_text(str(header)) == text[:65536]
