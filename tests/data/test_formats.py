"""WFDB / MATLAB v4 readers and writers, proven against wfdb and the real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from ecgml.data.formats import (
    DataFormatError,
    format_header,
    parse_header,
    read_dat16,
    read_header,
    read_matv4,
    to_physical,
    wfdb_checksum,
    write_challenge_record,
    write_matv4,
    write_wfdb_record,
)
from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.records import load_signal


def test_every_real_ptbxl_record_equals_wfdb(real_ptbxl: Path) -> None:
    headers = sorted(real_ptbxl.glob("records*/*/*.hea"))
    assert len(headers) == 120  # 100 at 100 Hz + 20 at 500 Hz
    for header_path in headers:
        base = str(header_path.with_suffix(""))
        expected, fields = wfdb.rdsamp(base)
        ours = load_signal(base)
        assert ours.shape == expected.T.shape
        np.testing.assert_allclose(ours, expected.T, rtol=0, atol=1e-6, err_msg=base)
        assert fields["fs"] in (100, 500)


def test_real_headers_round_trip_byte_for_byte(real_ptbxl: Path, real_g12ec: Path) -> None:
    paths = [*sorted(real_ptbxl.glob("records*/*/*.hea"))[:5], *sorted(real_g12ec.glob("*.hea"))]
    for path in paths:
        text = path.read_text()
        assert format_header(parse_header(text, path)) == text, path


def test_georgia_2020_header_is_read_although_wfdb_refuses_it(real_g12ec: Path) -> None:
    with pytest.raises(Exception):  # noqa: B017 - wfdb's own header syntax error
        wfdb.rdsamp(str(real_g12ec / "E00009"))
    header = read_header(real_g12ec / "E00009.hea")
    assert header.record_name == "E00009.mat"
    assert header.comment_prefix == "#"
    assert {s.gain for s in header.signals} == {4880.0}
    assert header.signals[0].byte_offset == 24
    mat = read_matv4(real_g12ec / "E00009.mat")
    assert mat.name == "val" and mat.data.shape == (12, 5000) and mat.data.dtype == np.int16
    checks = wfdb_checksum(mat.data)
    assert (checks == [s.checksum for s in header.signals]).all()


def test_georgia_2021_mat_equals_wfdb(real_g12ec: Path) -> None:
    for header_path in sorted(real_g12ec.glob("E075*.hea")):
        base = str(header_path.with_suffix(""))
        expected, _ = wfdb.rdsamp(base)
        np.testing.assert_allclose(load_signal(base), expected.T, atol=1e-6, err_msg=base)


def test_written_ptbxl_record_is_read_by_wfdb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    signal = (rng.standard_normal((12, 1000)) * 0.5).astype(np.float32)
    names = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    write_wfdb_record(tmp_path, "00001_lr", signal, 100, names)
    expected, fields = wfdb.rdsamp(str(tmp_path / "00001_lr"))
    assert fields["sig_name"] == names
    np.testing.assert_allclose(expected.T, np.round(signal * 1000) / 1000, atol=1e-6)
    np.testing.assert_allclose(load_signal(tmp_path / "00001_lr"), expected.T, atol=1e-6)


@pytest.mark.parametrize("dialect", ["2020", "2021"])
def test_written_challenge_record_reads_back(tmp_path: Path, dialect: str) -> None:
    signal = np.linspace(-2, 2, 12 * 500, dtype=np.float32).reshape(12, 500)
    write_challenge_record(tmp_path, "E00001", signal, 500, STANDARD_LEADS, comments=["Age: 50", "Dx: 164873001"],
                           dialect=dialect)
    np.testing.assert_allclose(load_signal(tmp_path / "E00001"), signal, atol=6e-4)
    header = read_header(tmp_path / "E00001.hea")
    assert header.record_name == ("E00001.mat" if dialect == "2020" else "E00001")
    if dialect == "2021":
        expected, _ = wfdb.rdsamp(str(tmp_path / "E00001"))
        np.testing.assert_allclose(expected.T, load_signal(tmp_path / "E00001"), atol=1e-6)


def test_nan_survives_a_round_trip(tmp_path: Path) -> None:
    signal = np.zeros((12, 100), dtype=np.float32)
    signal[3, 10:20] = np.nan
    write_wfdb_record(tmp_path, "r", signal, 100, STANDARD_LEADS)
    back = load_signal(tmp_path / "r")
    assert np.isnan(back[3, 10:20]).all() and not np.isnan(np.delete(back, 3, axis=0)).any()


def test_truncated_dat_names_the_file(tmp_path: Path) -> None:
    write_wfdb_record(tmp_path, "r", np.zeros((12, 100), np.float32), 100, STANDARD_LEADS)
    dat = tmp_path / "r.dat"
    dat.write_bytes(dat.read_bytes()[:-10])
    with pytest.raises(DataFormatError, match=r"r\.dat: truncated"):
        load_signal(tmp_path / "r")


def test_header_lying_about_length_or_lead_count(tmp_path: Path) -> None:
    write_wfdb_record(tmp_path, "r", np.zeros((12, 100), np.float32), 100, STANDARD_LEADS)
    hea = tmp_path / "r.hea"
    text = hea.read_text()
    hea.write_text(text.replace("r 12 100 100", "r 12 100 90", 1))
    with pytest.raises(DataFormatError, match="longer than its header says"):
        load_signal(tmp_path / "r")
    hea.write_text(text.replace("r 12 100 100", "r 11 100 100", 1))
    with pytest.raises(DataFormatError, match="declares 11 signals but 12 signal lines"):
        load_signal(tmp_path / "r")


def test_mat_shape_disagreeing_with_header(tmp_path: Path) -> None:
    write_challenge_record(tmp_path, "E1", np.zeros((12, 100), np.float32), 500, STANDARD_LEADS)
    write_matv4(tmp_path / "E1.mat", "val", np.zeros((12, 80), np.int16))
    with pytest.raises(DataFormatError, match="holds a 12 x 80 matrix"):
        load_signal(tmp_path / "E1")


def test_corrupt_samples_fail_the_checksum(tmp_path: Path) -> None:
    write_wfdb_record(tmp_path, "r", np.ones((12, 100), np.float32), 100, STANDARD_LEADS)
    dat = tmp_path / "r.dat"
    raw = bytearray(dat.read_bytes())
    raw[0] ^= 0x40
    dat.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match="checksum mismatch in lead"):
        load_signal(tmp_path / "r")


def test_missing_lead_is_named(tmp_path: Path) -> None:
    write_wfdb_record(tmp_path, "r", np.zeros((6, 100), np.float32), 100, STANDARD_LEADS[:6])
    with pytest.raises(ValueError, match=r"missing lead\(s\) V1, V2"):
        load_signal(tmp_path / "r")
    assert load_signal(tmp_path / "r", ["aVF", "I"]).shape == (2, 100)


@pytest.mark.parametrize("bad", ["", "r", "r x 100 100", "r 12 abc 100"])
def test_malformed_record_lines(bad: str) -> None:
    with pytest.raises(DataFormatError, match="hdr"):
        parse_header(bad, "hdr")


def test_physical_conversion_uses_baseline() -> None:
    digital = np.array([[1000, 2000]], dtype=np.int16)
    np.testing.assert_allclose(to_physical(digital, [1000.0], [1000]), [[0.0, 1.0]])


def test_dat_reader_refuses_other_formats(tmp_path: Path) -> None:
    write_wfdb_record(tmp_path, "r", np.zeros((12, 10), np.float32), 100, STANDARD_LEADS)
    header = read_header(tmp_path / "r.hea")
    text = (tmp_path / "r.hea").read_text().replace(" 16 1000.0", " 212 1000.0")
    with pytest.raises(DataFormatError, match="format-16"):
        read_dat16(tmp_path / "r.dat", parse_header(text, tmp_path / "r.hea"))
    assert read_dat16(tmp_path / "r.dat", header).shape == (12, 10)
