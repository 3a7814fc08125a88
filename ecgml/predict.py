"""Predict on anyone's records: WFDB (``.hea`` + ``.dat``) and Challenge (``.hea`` + ``.mat``) files and folders.

Each record is read in millivolts with its own rate and lead names, then handed to the loaded model's
:meth:`~ecgml.tracking.pyfunc.EcgClassifier.predict_record`, the very check and inference the served
model runs, so a record ``ecgml predict`` accepts is one the server accepts. A record that cannot be read
or is refused is listed with its reason and the others are still predicted. The CSV has one row per
record: ``record_id, path, status, fs, seconds, problems`` and one probability column per class, named.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgml.data.formats import DataFormatError, WfdbHeader, read_header
from ecgml.data.formats.wfdb import WFDB_DEFAULT_GAIN
from ecgml.data.leads import MissingLeadError
from ecgml.data.records import load_signal
from ecgml.data.signal import flat_leads
from ecgml.data.sources.g12ec import G12EC_GAIN_CORRECTIONS
from ecgml.io import atomic_write_text
from ecgml.tracking.ecg_input import DEFAULT_LIMITS, InvalidEcgInput, check_record_size

#: The columns before the class probabilities.
COLUMNS: tuple[str, ...] = ("record_id", "path", "status", "fs", "seconds", "problems")
#: Lists shorter than this get no progress bar.
PROGRESS_FROM = 20


class PredictError(ValueError):
    """A request ``ecgml predict`` cannot start on (no model, no record found); the message says why."""


@dataclass(frozen=True)
class Outcome:
    """One record: its probabilities, or why it has none, plus what reading it noticed."""

    record_id: str
    path: str
    status: str  # ok | refused | unreadable
    fs: float | None = None
    seconds: float | None = None
    problems: tuple[str, ...] = ()
    probabilities: tuple[float, ...] | None = None
    #: The problems the summary prints even when the record was predicted (an uncalibrated gain).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PredictSummary:
    out: Path
    classes: tuple[str, ...]
    outcomes: list[Outcome] = field(default_factory=list)
    not_records: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def lines(self, limit: int = 20) -> list[str]:
        """The summary ``ecgml predict`` prints."""
        failed = [o for o in self.outcomes if o.status != "ok"]
        head = (f"predicted {self.count('ok')} of {len(self.outcomes)} record(s) -> {self.out} "
                f"({self.count('refused')} refused, {self.count('unreadable')} unreadable)")
        out = [head, *[f"  {o.status}: {o.path}: {o.problems[-1]}" for o in failed[:limit]]]
        if len(failed) > limit:
            out.append(f"  ... and {len(failed) - limit} more (see the CSV's problems column)")
        warned = [w for o in self.outcomes for w in o.warnings]
        out.extend(f"  warning: {w}" for w in warned[:limit])
        if len(warned) > limit:
            out.append(f"  ... and {len(warned) - limit} more warnings (see the CSV's problems column)")
        out.extend(f"  skipped: {reason}" for reason in self.not_records[:limit])
        if len(self.not_records) > limit:
            out.append(f"  ... and {len(self.not_records) - limit} more skipped")
        return out


#: The file endings ``ecgml predict`` reads, in the lower case the readers expect.
HEADER_SUFFIX = ".hea"
SIGNAL_SUFFIXES: tuple[str, ...] = (".dat", ".mat")


def _walk(folder: Path, skipped: list[str]) -> list[Path]:
    """Every file under ``folder`` at any depth, following symlinked folders. Each real folder is searched
    once: a link to one already searched (a loop, or a second link to it) is named in ``skipped``, as is a
    folder that cannot be listed."""
    files: list[Path] = []
    seen: dict[tuple[int, int], Path] = {}

    def unlisted(error: OSError) -> None:
        skipped.append(f"{error.filename}: cannot list this folder ({error.strerror})")

    for top, folders, names in os.walk(folder, onerror=unlisted, followlinks=True):
        here = Path(top)
        info = here.stat()
        key = (info.st_dev, info.st_ino)
        if key in seen:
            skipped.append(f"{here}: a link to {seen[key]}, a folder already searched (a loop, or a second link to "
                           "it); not searched again")
            folders.clear()
            continue
        seen[key] = here
        folders.sort()
        files.extend(here / name for name in sorted(names))
    return files


def _has_header(path: Path) -> bool:
    return any(path.with_suffix(s).exists() for s in (HEADER_SUFFIX, HEADER_SUFFIX.upper()))


def _not_read(path: Path) -> str | None:
    """Why a file that looks like part of a record is not read: a header with an upper-case ending, or a
    signal file with no header beside it. None for a file that is read, or that is no record file at all."""
    suffix = path.suffix
    if suffix == HEADER_SUFFIX or suffix.lower() not in (HEADER_SUFFIX, *SIGNAL_SUFFIXES):
        return None
    if suffix.lower() == HEADER_SUFFIX:
        return (f"{path}: upper-case ending {suffix}; ecgml reads the endings {HEADER_SUFFIX}, .dat and .mat in "
                f"lower case (rename the record's files, e.g. {path.with_suffix(HEADER_SUFFIX).name})")
    if _has_header(path):  # the header is read, or reported itself
        return None
    return f"{path}: a signal file without its header {path.with_suffix(HEADER_SUFFIX).name}; a record needs both"


def find_records(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """The headers of the records named: ``.hea``/``.dat``/``.mat`` files, record paths without an
    extension, and folders (searched at any depth, symlinked folders followed once each). Also returns
    what was not read, with why: upper-case endings, signal files without a header, loops, missing paths."""
    found: dict[Path, None] = {}
    skipped: list[str] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            files = _walk(path, skipped)
            headers = [f for f in files if f.suffix == HEADER_SUFFIX]
            skipped.extend(reason for reason in map(_not_read, files) if reason)
            if not headers:
                skipped.append(f"{path}: a folder with no .hea header at any depth")
            found.update(dict.fromkeys(headers))
        elif path.suffix in (HEADER_SUFFIX, *SIGNAL_SUFFIXES) and path.with_suffix(HEADER_SUFFIX).exists():
            found[path.with_suffix(HEADER_SUFFIX)] = None
        elif Path(f"{path}{HEADER_SUFFIX}").exists():
            found[Path(f"{path}{HEADER_SUFFIX}")] = None
        elif path.exists() and (reason := _not_read(path)):
            skipped.append(reason)
        else:
            skipped.append(f"{path}: no such record (expected a folder, a .hea/.dat/.mat file or a record path)")
    return list(found), skipped


def uncalibrated_note(header: WfdbHeader) -> str | None:
    """The warning for a header whose gain is 0 or missing on some leads (None when every lead has one)."""
    leads = header.uncalibrated_leads
    if not leads:
        return None
    which = "every lead declares" if len(leads) == len(header.signals) else f"lead(s) {', '.join(leads)} declare"
    return (f"{header.source_path}: {which} an ADC gain of 0 or none, which WFDB reads as uncalibrated "
            f"at its default {WFDB_DEFAULT_GAIN:g} units/mV; the millivolts, and so the prediction, rest on that "
            "guess: write the device's true gain into the header")


def read_record(header_path: Path, header: WfdbHeader | None = None
                ) -> tuple[np.ndarray, float, list[str], list[str]]:
    """``float32[leads, samples]`` in mV in the file's lead order, its rate, its lead names, and the
    problems noticed that did not stop the reading."""
    header = header or read_header(header_path)
    problems = []
    corrections = {g: t for g, t in G12EC_GAIN_CORRECTIONS.items() if any(s.gain == g for s in header.signals)}
    for declared, true in corrections.items():
        problems.append(f"header declares a gain of {declared:g}/mV, read as {true:g}/mV (a known defect of "
                        "the 2020 Georgia release)")
    note = uncalibrated_note(header)
    if note:
        problems.append(note)
    names = header.lead_names
    x = load_signal(header_path.with_suffix(""), names, gain_corrections=corrections)
    finite = np.isfinite(x)
    flat = [n for n, is_flat in zip(names, flat_leads(np.where(finite, x, 0)), strict=True) if is_flat]
    if flat:
        problems.append(f"flat lead(s) {', '.join(flat)}")
    return x, float(header.fs), names, problems


def predict_files(classifier: Any, headers: Sequence[Path],
                  progress: Callable[[Iterable[Path]], Iterable[Path]] | None = None) -> list[Outcome]:
    """Read and predict each record; failures become outcomes, never exceptions."""
    outcomes = []
    limits = getattr(classifier, "limits", DEFAULT_LIMITS)
    for header_path in progress(headers) if progress else headers:
        record_id, where = header_path.stem, str(header_path.with_suffix(""))
        try:
            header = read_header(header_path)
        except (DataFormatError, OSError) as exc:
            outcomes.append(Outcome(record_id, where, "unreadable", problems=(str(exc),)))
            continue
        try:  # before the signal file is read: a record too large is refused as the server refuses it
            check_record_size(header.n_sig * header.n_samples, header.n_sig, header.n_samples / header.fs, where,
                              limits)
        except InvalidEcgInput as exc:
            outcomes.append(Outcome(record_id, where, "refused", header.fs, header.n_samples / header.fs,
                                    (str(exc),)))
            continue
        try:
            x, fs, names, problems = read_record(header_path, header)
        except (DataFormatError, MissingLeadError, OSError, ValueError) as exc:
            outcomes.append(Outcome(record_id, where, "unreadable", problems=(str(exc),)))
            continue
        seconds = x.shape[1] / fs if fs > 0 else None
        warnings = (note,) if (note := uncalibrated_note(header)) else ()
        try:
            probs = classifier.predict_record(x, fs, names, where)
        except InvalidEcgInput as exc:
            outcomes.append(Outcome(record_id, where, "refused", fs, seconds, (*problems, str(exc)), warnings=warnings))
            continue
        outcomes.append(Outcome(record_id, where, "ok", fs, seconds, tuple(problems), tuple(map(float, probs)),
                                warnings))
    return outcomes


def outcomes_frame(outcomes: Sequence[Outcome], classes: Sequence[str]) -> pd.DataFrame:
    rows = []
    for o in outcomes:
        row: dict[str, Any] = {"record_id": o.record_id, "path": o.path, "status": o.status, "fs": o.fs,
                               "seconds": None if o.seconds is None else round(o.seconds, 3),
                               "problems": "; ".join(o.problems)}
        row.update(zip(classes, o.probabilities or (None,) * len(classes), strict=True))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*COLUMNS, *classes])


def load_classifier(model_uri: str) -> Any:
    """The served object of a logged ecgml model (calibration included), loaded through MLflow."""
    import mlflow

    from ecgml.tracking.store import tracking_uri

    body = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else None
    if body is not None and "/" not in body.rstrip("/") and "@" not in body and not body.startswith("m-"):
        raise PredictError(f"{model_uri}: name a version or an alias: models:/{body.rstrip('/')}/VERSION or "
                           f"models:/{body.rstrip('/')}@ALIAS (ecgml registry list {body.rstrip('/')} shows them)")
    mlflow.set_tracking_uri(tracking_uri())
    try:
        loaded = mlflow.pyfunc.load_model(model_uri)
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise PredictError(f"{model_uri}: cannot load the model ({str(exc).splitlines()[0]})") from None
    classifier = getattr(loaded.unwrap_python_model(), "classifier", None)
    if classifier is None or not hasattr(classifier, "predict_record"):
        raise PredictError(f"{model_uri}: not an ecgml classifier (logged by ecgml's pyfunc flavour)")
    return classifier


def predict(model_uri: str, paths: Sequence[str | Path], out: str | Path, *, progress: bool | None = None
            ) -> PredictSummary:
    """Predict every record under ``paths`` with ``model_uri`` and write the CSV to ``out`` (atomically).
    ``progress``: a bar on long lists; by default only when stderr is a terminal."""
    headers, skipped = find_records(paths)
    if not headers:
        raise PredictError("no record found in " + ", ".join(map(str, paths)) + (f": {skipped[0]}" if skipped else ""))
    classifier = load_classifier(model_uri)
    classes = tuple(classifier.metadata.classes)
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show and len(headers) >= PROGRESS_FROM:
        from tqdm import tqdm

        def bar(items: Iterable[Path]) -> Iterable[Path]:
            return tqdm(items, total=len(headers), desc="predict", unit="record")
    outcomes = predict_files(classifier, headers, bar)
    target = Path(out)
    atomic_write_text(target, outcomes_frame(outcomes, classes).to_csv(index=False))
    return PredictSummary(target, classes, outcomes, skipped)
