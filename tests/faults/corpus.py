"""A corpus of deliberately broken records, built from copies of the real sample records and from
synthetic ones, each paired with what ecgml must say about it.

Two trees come out: a PTB-XL tree (the 100 real 100 Hz sample records and their metadata rows, some
corrupted) and a G12EC tree (the 12 real Georgia records plus a small synthetic tree, some corrupted).
Every :class:`Case` names the record, the problem kind ``ecgml data stats`` counts it under, a piece of
the message that must explain it, and whether the record is dropped. Dataset-level cases (an empty
dataset after filtering, registry errors) live in the tests, which build them from these trees.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ecgml.data.formats import read_header, write_challenge_record, write_wfdb_record
from ecgml.data.records import load_signal
from ecgml.data.synth import generate_g12ec


@dataclass(frozen=True)
class Case:
    """One broken record and the outcome ecgml owes the user."""

    name: str
    source: str
    record_id: str
    #: The kind ``ecgml data stats`` counts it under (``None``: kept and counted elsewhere, see ``counted``).
    kind: str | None
    #: A piece of the message that must explain the problem (it also names the file).
    message: str
    dropped: bool
    #: For records kept with a repaired signal: which statistic counts them (``records_with_nan``...).
    counted: tuple[str, ...] = ()


@dataclass
class Corpus:
    ptbxl: Path
    g12ec: Path
    cases: list[Case] = field(default_factory=list)

    def of(self, source: str) -> list[Case]:
        return [c for c in self.cases if c.source == source]


def _edit_header(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, count))


def _rewrite_ptbxl(folder: Path, name: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Load a record, change its signal, write it back with true checksums (so only the change is wrong)."""
    header = read_header(folder / f"{name}.hea")
    signal = change(load_signal(folder / name, header.lead_names))
    write_wfdb_record(folder, name, signal, header.fs, [s.name for s in header.signals],
                      comments=header.comments)


def _rewrite_challenge(folder: Path, name: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
    header = read_header(folder / f"{name}.hea")
    signal = change(load_signal(folder / name, header.lead_names))
    write_challenge_record(folder, name, signal, header.fs, [s.name for s in header.signals],
                           comments=header.comments)


def build_ptbxl(real: Path, root: Path) -> list[Case]:
    """Copy the real PTB-XL sample (100 Hz records and metadata) to ``root`` and break some records."""
    shutil.copytree(real / "records100", root / "records100")
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(real / name, root / name)
    folder = root / "records100" / "00000"
    cases: list[Case] = []

    def case(rid: int, kind: str | None, message: str, dropped: bool, name: str, counted: tuple[str, ...] = ()
             ) -> None:
        cases.append(Case(name, "ptbxl", str(rid), kind, message, dropped, counted))

    def rec(rid: int) -> str:
        return f"{rid:05d}_lr"

    dat = folder / f"{rec(2)}.dat"
    dat.write_bytes(dat.read_bytes()[:7001])
    case(2, "unreadable_signal", f"{rec(2)}.dat: truncated", True, "truncated .dat")

    _edit_header(folder / f"{rec(3)}.hea", f"{rec(3)} 12 100 1000", f"{rec(3)} 12 100 1200")
    case(3, "unreadable_signal", f"{rec(3)}.dat: truncated: header promises 12 signals x 1200 samples", True,
         "header lying about length")

    _edit_header(folder / f"{rec(4)}.hea", f"{rec(4)} 12 100", f"{rec(4)} 11 100")
    case(4, "unreadable_signal", f"{rec(4)}.hea: record line declares 11 signals but 12 signal lines follow", True,
         "header lying about lead count")

    lines = (folder / f"{rec(5)}.hea").read_text().splitlines(keepends=True)
    (folder / f"{rec(5)}.hea").write_text(lines[0].replace(" 12 100", " 11 100") + "".join(lines[1:12]))
    case(5, "unreadable_signal", f"{rec(5)}.dat: longer than its header says: header promises 11 signals", True,
         "header lying about lead count (a lead line removed)")

    _edit_header(folder / f"{rec(6)}.hea", " 1000.0(0)/mV ", " 10.0(0)/mV ", count=12)
    case(6, "implausible_amplitude", f"{rec(6)}.hea: implausible amplitude", True,
         "header lying about gain (100x)")

    _edit_header(folder / f"{rec(7)}.hea", " 1000.0(0)/mV ", " -1000.0(0)/mV ")
    case(7, "unreadable_signal", f"{rec(7)}.hea: gain '-1000.0(0)/mV' of signal", True, "negative gain")

    def nan_lead(x: np.ndarray) -> np.ndarray:
        x = x.copy()
        x[2] = np.nan
        return x

    _rewrite_ptbxl(folder, rec(8), nan_lead)
    case(8, None, "", False, "NaN lead", ("records_with_nan", "records_with_flat_leads"))

    def flat_lead(x: np.ndarray) -> np.ndarray:
        x = x.copy()
        x[7] = 0.0
        return x

    _rewrite_ptbxl(folder, rec(9), flat_lead)
    case(9, None, "", False, "flat lead", ("records_with_flat_leads",))

    _rewrite_ptbxl(folder, rec(10), np.zeros_like)
    case(10, "flat_signal", f"{rec(10)}.hea: every lead is flat", True, "every lead flat")

    raw = bytearray((folder / f"{rec(11)}.dat").read_bytes())
    raw[100] ^= 0x10
    (folder / f"{rec(11)}.dat").write_bytes(bytes(raw))
    case(11, "unreadable_signal", f"{rec(11)}.hea: checksum mismatch in lead", True, "corrupted samples")

    _edit_header(folder / f"{rec(12)}.hea", " V6\n", " X6\n")
    case(12, "missing_lead", "missing lead(s) V6", True, "a lead under an unknown name")

    (folder / f"{rec(13)}.hea").write_bytes(b"\x00\xff\x13garbage\x00\n\x01\x02")
    case(13, "unreadable_signal", f"{rec(13)}.hea", True, "binary garbage for a header")

    (folder / f"{rec(14)}.hea").unlink()
    case(14, "missing_file", f"{rec(14)}.hea: record listed in ptbxl_database.csv but not found", True,
         "listed record missing on disk")

    header = read_header(folder / f"{rec(22)}.hea")
    signal = load_signal(folder / rec(22), header.lead_names)
    write_wfdb_record(folder, rec(22), np.vstack([signal, signal[1:2] * 0.5]), header.fs,
                      [*(s.name for s in header.signals), "II"], comments=header.comments)
    case(22, "duplicate_lead", f"{rec(22)}.hea: lead(s) II appear more than once", True,
         "a lead twice (13 signals, a second II)")

    def eleven_flat(x: np.ndarray) -> np.ndarray:
        x = x.copy()
        x[1:] = 0.0
        return x

    _rewrite_ptbxl(folder, rec(23), eleven_flat)
    # kept for training (the cache keeps any record with a moving lead) but refused by serving and predict:
    # tests/serving/test_units.py::test_mostly_flat_records_are_refused_in_serving_and_predict
    case(23, None, "", False, "11 of 12 leads flat", ("records_with_flat_leads",))

    _edit_header(folder / f"{rec(24)}.hea", " 1000.0(0)/mV ", " 0(0)/mV ", count=12)
    # kept (WFDB reads a gain of 0 as uncalibrated, at 200/mV: 5x PTB-XL's, still a plausible amplitude);
    # ecgml predict warns, naming the file: tests/serving/test_bad_inputs.py::test_a_zero_gain_is_read_as_wfdbs_...
    case(24, None, "", False, "gain 0 (uncalibrated, read at WFDB's 200/mV)")

    (folder / f"{rec(25)}.dat").unlink()
    os.mkfifo(folder / f"{rec(25)}.dat")  # opening it to read blocks until a writer comes: it hung the cache build
    case(25, "unreadable_signal", f"{rec(25)}.dat: is a named pipe (FIFO), not a regular file; refused without "
         "opening it", True, "a FIFO for a .dat")

    table = pd.read_csv(root / "ptbxl_database.csv")
    at = table["ecg_id"].astype(int)
    table.loc[at == 15, "scp_codes"] = "{'NORM': 100.0"
    case(15, "bad_scp_codes", "is not a dict literal", True, "unparsable scp_codes")
    table.loc[at == 16, "scp_codes"] = "{'NORM': 'likely'}"
    case(16, "bad_scp_codes", "'likely' is not statement -> number", True, "non-numeric scp likelihood")
    table.loc[at == 17, "scp_codes"] = "{'NORM': 100.0, 'XYZZY': 50.0}"
    case(17, "unknown_scp_statement", "statement(s) XYZZY are not in", False, "unknown SCP statement")
    table.loc[at == 18, "filename_lr"] = "records100/../../../../etc/passwd"
    case(18, "unsafe_path", "leaves the dataset folder (a '..' component); refused", True, "'..' in a record path")
    table.loc[at == 19, "filename_lr"] = "/etc/passwd"
    case(19, "unsafe_path", "is an absolute path; refused", True, "absolute record path")
    table["strat_fold"] = table["strat_fold"].astype(object)
    table.loc[at == 20, "strat_fold"] = "ten"
    case(20, "bad_fold", "strat_fold 'ten' is not a fold number", True, "non-numeric fold")
    duplicate = table.loc[at == 21].assign(scp_codes="{'IMI': 100.0}")
    table = pd.concat([table, duplicate], ignore_index=True)
    case(21, "duplicate_record", "ecg_id 21 appears more than once; the later row is ignored", False,
         "duplicate ecg_id")
    table.to_csv(root / "ptbxl_database.csv", index=False)
    return cases


def build_g12ec(real: Path, root: Path, n_synthetic: int = 40) -> list[Case]:
    """A small synthetic G12EC tree (in ``g1/``) plus the real Georgia records (at the top), some broken."""
    generate_g12ec(root, n_synthetic, seed=1, workers=1, progress=False)
    for path in real.iterdir():
        if path.suffix in (".hea", ".mat"):
            shutil.copy(path, root / path.name)
    synth = root / "g1"
    cases: list[Case] = []

    def case(rid: str, kind: str | None, message: str, dropped: bool, name: str, counted: tuple[str, ...] = ()
             ) -> None:
        cases.append(Case(name, "g12ec", rid, kind, message, dropped, counted))

    # the synthetic tree has its own E00009: the real one, sorted first, is kept
    case("E00009", "duplicate_record", "record id 'E00009' is already taken by", False, "duplicate record id")
    case("E00009", "gain_corrected", "a known defect of the 2020 release; read at 1000/mV", False,
         "the 2020 release's 4880/mV gain")

    mat = root / "E07500.mat"
    mat.write_bytes(mat.read_bytes()[:50_000])
    case("E07500", "unreadable_signal", "E07500.mat: truncated: matrix 'val' of 12 x 5000 needs", True,
         "truncated .mat")

    _edit_header(root / "E07501.hea", "E07501 12 500 5000", "E07501 12 500 6000")
    case("E07501", "unreadable_signal", "E07501.mat: holds a 12 x 5000 matrix but its header declares 12 signals "
         "x 6000 samples", True, "header lying about length")

    _edit_header(root / "E07502.hea", "E07502 12 500", "E07502 11 500")
    case("E07502", "bad_header", "E07502.hea: record line declares 11 signals but 12 signal lines follow", True,
         "header lying about lead count")

    _edit_header(root / "E07503.hea", " 1000.0(0)/mV ", " 100000.0(0)/mV ", count=12)
    case("E07503", "implausible_amplitude", "E07503.hea: implausible amplitude", True,
         "header lying about gain (1/100)")

    raw = bytearray((root / "E07504.mat").read_bytes())
    raw[:4] = struct.pack("<i", 9999)
    (root / "E07504.mat").write_bytes(bytes(raw))
    case("E07504", "unreadable_signal", "E07504.mat: not a numeric MATLAB v4 matrix", True, "corrupt .mat header")

    (root / "E07505.mat").unlink()
    case("E07505", "missing_file", "E07505.mat: signal file named in", True, "missing .mat")

    _edit_header(root / "E07506.hea", "E07506.mat", "../E07506.mat", count=12)
    case("E07506", "unsafe_path", "signal file name '../E07506.mat' is a path", True, "'..' in a signal file name")

    (root / "E07507.hea").write_text("")
    case("E07507", "bad_header", "E07507.hea: empty header", True, "empty header")

    def set_dx(path: Path, dx: str | None) -> None:
        lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip("# ").startswith("Dx")]
        if dx is not None:
            lines.append(f"# Dx: {dx}")
        path.write_text("\n".join(lines) + "\n")

    set_dx(synth / "E00001.hea", "164934002,164934002,426783006")
    case("E00001", "duplicate_codes", "duplicate Dx entries 164934002 dropped", False, "duplicate SNOMED codes")
    set_dx(synth / "E00002.hea", "426783006,999999999")
    case("E00002", "unknown_snomed", "unknown SNOMED CT code(s) 999999999 (not in the Challenge's tables); kept", False,
         "unknown SNOMED code")
    set_dx(synth / "E00003.hea", None)
    case("E00003", "missing_dx", "E00003.hea: no Dx line", True, "no Dx line")

    def nan_lead(x: np.ndarray) -> np.ndarray:
        x = x.copy()
        x[4, 1000:3000] = np.nan
        return x

    _rewrite_challenge(synth, "E00004", nan_lead)
    case("E00004", None, "", False, "NaN samples in a lead", ("records_with_nan",))
    _rewrite_challenge(synth, "E00005", lambda x: np.full_like(x, np.nan))
    case("E00005", "flat_signal", "E00005.hea: every lead is flat", True, "every sample NaN")
    _rewrite_challenge(synth, "E00006", lambda x: x[:, :500])
    case("E00006", None, "", False, "1 s record, shorter than a 2.5 s crop", ("short",))
    _rewrite_challenge(synth, "E00007", lambda x: x[:, :0])
    case("E00007", "unreadable_signal", "E00007.mat: holds no samples", True, "a record of 0 samples")

    foreign = root / "HR00001"
    write_challenge_record(root, foreign.name, np.zeros((12, 5000), np.float32) + 0.1, 500,
                           [s.name for s in read_header(synth / "E00008.hea").signals], comments=["Dx: 426783006"])
    case("HR00001", "foreign_record", "is a PTB-XL record, not Georgia; refused", True, "a PTB-XL record in G12EC")
    return cases


def build_corpus(real_sample: Path, root: Path) -> Corpus:
    ptbxl, g12ec = root / "ptbxl", root / "g12ec"
    cases = build_ptbxl(real_sample / "ptbxl", ptbxl) + build_g12ec(real_sample / "g12ec", g12ec)
    return Corpus(ptbxl, g12ec, cases)
