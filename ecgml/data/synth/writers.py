"""Write synthetic PTB-XL-shaped, G12EC-shaped and CPSC 2018-shaped trees in the real on-disk formats.

PTB-XL: ``ptbxl_database.csv`` (28 columns), ``scp_statements.csv``, ``records500/<folder>/NNNNN_hr``
and ``records100/<folder>/NNNNN_lr`` (WFDB format 16, 1000/mV, leads I ... AVR AVL AVF V1-V6); the
100 Hz files are anti-aliased decimations of the 500 Hz signal (polyphase FIR), as PTB-XL's were, so
they carry no 50 Hz mains hum.
G12EC: ``g1/E00001.{mat,hea}``, ``g2/...`` (1000 records per folder, the 2021 Challenge layout), 500 Hz
MATLAB v4 ``val`` plus a WFDB header with ``Age``/``Sex``/``Dx``/``Rx``/``Hx`` comments, mostly in the
2021 dialect, some in the 2020 one (and some of those with the 4880/mV gain defect).
CPSC 2018: ``A0001.{mat,hea}`` ... at 500 Hz, 6 to 60 s each, headers as the 2020 Challenge's first release
writes them (``16+24 1000/mV``, ``#Dx: AF,RBBB`` in abbreviations, all records in one folder), or with
``dx_dialect="snomed"`` as the 2021 Challenge re-issued them (``#Dx:`` as SNOMED CT codes, ``g1/``, ``g2/``...).

Every file goes through the atomic writers; ``SYNTH.json`` (config and label counts) is written last,
so its presence means the tree is complete. Records are seeded from (seed, record index): the bytes do
not depend on ``workers``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import firwin, resample_poly
from tqdm import tqdm

from ecgml.data.formats import write_challenge_record, write_wfdb_record
from ecgml.data.labels import load_label_map
from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.sources.g12ec import G12EC_FS
from ecgml.data.synth.config import CPSC, SynthConfig
from ecgml.data.synth.cpsc import CPSC_FS, classes_of, dx_entries
from ecgml.data.synth.labels import georgia_codes, nsr_share, ptbxl_statements
from ecgml.data.synth.metadata import (
    PATIENT_STREAM,
    PLAN_STREAM,
    RECORD_STREAM,
    RecordPlan,
    patient_folds,
    plan_cpsc,
    plan_records,
    ptbxl_table,
)
from ecgml.data.synth.noise import NoiseConfig
from ecgml.data.synth.simulate import simulate
from ecgml.data.synth.statements import SCP_STATEMENTS_CSV
from ecgml.io import atomic_write_json, atomic_write_text

#: Lead names as PTB-XL's headers spell them.
PTBXL_LEAD_NAMES: tuple[str, ...] = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
GEORGIA_FS = G12EC_FS
FOLDER_SIZE = 1000
_ENCODE_STREAM = 3


@dataclass(frozen=True)
class SynthSummary:
    """What a generation run wrote."""

    root: Path
    source: str
    n_records: int
    n_patients: int
    seconds: float
    label_counts: dict[str, int]
    config: dict[str, Any]

    def __str__(self) -> str:
        top = ", ".join(f"{k} {v}" for k, v in sorted(self.label_counts.items(), key=lambda kv: -kv[1])[:6])
        return (f"{self.n_records} records ({self.n_patients} patients) written to {self.root} in "
                f"{self.seconds:.1f} s; most frequent labels: {top}")

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "source": self.source, "n_records": self.n_records,
                "n_patients": self.n_patients, "seconds": round(self.seconds, 3),
                "label_counts": self.label_counts, "config": self.config}


def _record_seeds(config: SynthConfig, plan: RecordPlan) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    record = np.random.SeedSequence(config.seed, spawn_key=(RECORD_STREAM, plan.index))
    patient = np.random.SeedSequence(config.seed, spawn_key=(PATIENT_STREAM, plan.patient))
    return record, patient


@cache
def _nsr_share(config: SynthConfig) -> float:
    return nsr_share(config.build_priors())


@cache
def _decimation_taps() -> np.ndarray:
    """Anti-aliasing low-pass for 500 -> 100 Hz: 151-tap Kaiser FIR (beta 5) cut at 44 Hz.

    Flat to 40 Hz (-0.3 dB) and -55 dB at 50 Hz. ``resample_poly``'s default filter is cut at the new
    Nyquist frequency itself and lets 50 Hz through at -6 dB, where it would alias; mains hum must not
    survive in the 100 Hz files.
    """
    return firwin(151, 44.0 / 250.0, window=("kaiser", 5.0))


def decimate_to_100(signal: np.ndarray) -> np.ndarray:
    """500 Hz -> 100 Hz: anti-aliasing low-pass and polyphase decimation (``resample_poly``)."""
    return resample_poly(signal, 1, 5, axis=1, window=_decimation_taps().astype(signal.dtype))


def _ptbxl_record(root: Path, config: SynthConfig, plan: RecordPlan) -> dict[str, Any]:
    record_seed, patient_seed = _record_seeds(config, plan)
    ecg = simulate(plan.concepts, record_seed, patient_seed=patient_seed, age=plan.age, sex=plan.sex,
                   fs=500.0, seconds=config.seconds, noise=config.noise)
    ecg_id = plan.index + 1
    folder = f"{(ecg_id // FOLDER_SIZE) * FOLDER_SIZE:05d}"
    if 500 in config.sampling_rates:
        write_wfdb_record(root / "records500" / folder, f"{ecg_id:05d}_hr", ecg.signal, 500, PTBXL_LEAD_NAMES)
    if 100 in config.sampling_rates:
        write_wfdb_record(root / "records100" / folder, f"{ecg_id:05d}_lr", decimate_to_100(ecg.signal), 100,
                          PTBXL_LEAD_NAMES)
    return {"axis": ecg.axis, "baseline_drift": ecg.noise.baseline_drift, "static_noise": ecg.noise.static_noise,
            "burst_noise": ecg.noise.burst_noise, "electrodes_problems": ecg.noise.electrodes_problems}


def _g12ec_record(root: Path, config: SynthConfig, plan: RecordPlan) -> dict[str, Any]:
    record_seed, patient_seed = _record_seeds(config, plan)
    ecg = simulate(plan.concepts, record_seed, patient_seed=patient_seed, age=plan.age, sex=plan.sex,
                   fs=float(GEORGIA_FS), seconds=config.seconds, noise=config.noise)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(_ENCODE_STREAM, plan.index)))
    codes = georgia_codes(frozenset(plan.concepts), ecg.axis, rng, _nsr_share(config))
    written = list(codes)
    if written and rng.random() < config.duplicate_dx_fraction:
        written.append(written[int(rng.integers(len(written)))])  # the release's duplicate labels
    dialect = "2020" if rng.random() < config.header_2020_fraction else "2021"
    defect = dialect == "2020" and rng.random() < config.gain_defect_fraction
    comments = [f"Age: {int(plan.age)}", f"Sex: {'Male' if plan.sex == 'M' else 'Female'}",
                f"Dx: {','.join(written)}", "Rx: Unknown", "Hx: Unknown"]
    if dialect == "2020":
        comments.append("Sx: Unknown")
    name = f"E{plan.index + 1:05d}"
    write_challenge_record(root / f"g{plan.index // FOLDER_SIZE + 1}", name, ecg.signal, GEORGIA_FS,
                           STANDARD_LEADS, comments=comments, dialect=dialect,
                           declared_gain=4880.0 if defect else None)
    return {"codes": codes, "dialect": dialect, "gain_defect": defect}


def _cpsc_record(root: Path, config: SynthConfig, plan: RecordPlan) -> dict[str, Any]:
    record_seed, patient_seed = _record_seeds(config, plan)
    seconds = plan.seconds or config.seconds
    ecg = simulate(plan.concepts, record_seed, patient_seed=patient_seed, age=plan.age, sex=plan.sex,
                   fs=float(CPSC_FS), seconds=seconds, noise=config.noise)
    dialect = config.dx_dialect or "abbreviation"
    comments = [f"Age: {int(plan.age)}", f"Sex: {'Male' if plan.sex == 'M' else 'Female'}",
                f"Dx: {','.join(dx_entries(plan.concepts, dialect))}", "Rx: Unknown", "Hx: Unknown", "Sx: Unknown"]
    folder = root if dialect == "abbreviation" else root / f"g{plan.index // FOLDER_SIZE + 1}"
    write_challenge_record(folder, f"A{plan.index + 1:04d}", ecg.signal, CPSC_FS, STANDARD_LEADS,
                           comments=comments, dialect="2020")
    return {"classes": [c.abbreviation for c in classes_of(plan.concepts)],
            "codes": [c.code for c in classes_of(plan.concepts)], "seconds": seconds}


_WRITERS: dict[str, Callable[[Path, SynthConfig, RecordPlan], dict[str, Any]]] = {
    "ptbxl": _ptbxl_record,
    "g12ec": _g12ec_record,
    CPSC: _cpsc_record,
}


def _run_chunk(root: Path, config: SynthConfig, plans: list[RecordPlan]) -> list[dict[str, Any]]:
    """Worker entry point: draw and write a chunk of records; returns what the tables need."""
    writer = _WRITERS[config.source]
    return [writer(root, config, plan) for plan in plans]


def _chunks(plans: list[RecordPlan], size: int) -> Iterator[list[RecordPlan]]:
    for start in range(0, len(plans), size):
        yield plans[start:start + size]


def _draw_all(root: Path, config: SynthConfig, plans: list[RecordPlan]) -> list[dict[str, Any]]:
    """Draw and write every record, in parallel when asked; results come back in record order."""
    workers = config.workers or os.cpu_count() or 1
    chunks = list(_chunks(plans, config.chunk_size))
    workers = min(workers, len(chunks))
    results: list[list[dict[str, Any]]] = [[] for _ in chunks]
    bar = tqdm(total=len(plans), desc=f"synthesising {config.source}", unit="rec", disable=not config.progress)
    try:
        if workers <= 1:
            for i, chunk in enumerate(chunks):
                results[i] = _run_chunk(root, config, chunk)
                bar.update(len(chunk))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_run_chunk, root, config, chunk): i for i, chunk in enumerate(chunks)}
                for future in as_completed(futures):
                    i = futures[future]
                    results[i] = future.result()
                    bar.update(len(chunks[i]))
    finally:
        bar.close()
    return [r for chunk in results for r in chunk]


def _prepare_root(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "SYNTH.json"
    if marker.exists():
        marker.unlink()  # an interrupted rewrite must not look complete


def _finish(root: Path, config: SynthConfig, plans: list[RecordPlan], counts: Counter[str],
            started: float) -> SynthSummary:
    atomic_write_text(root / "VERSION", f"synthetic-ecgml-{config.source}-v{config.to_dict()['generator_version']}"
                                        f"-seed{config.seed}-n{config.n_records}\n")
    summary = SynthSummary(root=root, source=config.source, n_records=len(plans),
                           n_patients=len({p.patient for p in plans}), seconds=time.perf_counter() - started,
                           label_counts=dict(sorted(counts.items())), config=config.to_dict())
    document = summary.to_dict()
    for volatile in ("seconds", "root"):  # the marker's bytes depend on the config alone, not on the run
        document.pop(volatile)
    atomic_write_json(root / "SYNTH.json", json.loads(json.dumps(document, default=str)))
    return summary


def generate(root: str | os.PathLike[str], config: SynthConfig) -> SynthSummary:
    """Write the tree described by ``config`` under ``root``; returns a :class:`SynthSummary`."""
    started = time.perf_counter()
    root = Path(root)
    _prepare_root(root)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(PLAN_STREAM,)))
    plans = plan_cpsc(config, rng) if config.source == CPSC else plan_records(config, rng)
    if config.source == CPSC:
        results = _draw_all(root, config, plans)
        counts = Counter(f"class:{c}" for r in results for c in r["classes"])
        counts.update(c for r in results for c in r["codes"])
    elif config.source == "ptbxl":
        statements = [ptbxl_statements(frozenset(p.concepts), rng) for p in plans]
        folds = patient_folds(plans, statements, config.seed)
        results = _draw_all(root, config, plans)
        table = ptbxl_table(config, plans, statements, folds, results, rng)
        atomic_write_text(root / "scp_statements.csv", SCP_STATEMENTS_CSV)
        atomic_write_text(root / "ptbxl_database.csv", table.to_csv(index=False))
        counts = Counter(s for codes in statements for s in codes)
    else:
        results = _draw_all(root, config, plans)
        counts = Counter(c for r in results for c in r["codes"])
        lmap = load_label_map("challenge")
        for r in results:
            for cls in lmap.from_snomed(r["codes"]):
                counts[f"class:{cls}"] += 1
        counts["header:2020"] = sum(r["dialect"] == "2020" for r in results)
        counts["header:gain_defect"] = sum(bool(r["gain_defect"]) for r in results)
    return _finish(root, config, plans, counts, started)


def generate_ptbxl(
    root: str | os.PathLike[str],
    n_records: int,
    seed: int = 0,
    *,
    sampling_rates: tuple[int, ...] = (100, 500),
    workers: int = 0,
    progress: bool = True,
    priors: Mapping[str, float] | None = None,
    noise: NoiseConfig | str | None = "default",
    **options: Any,
) -> SynthSummary:
    """Write a PTB-XL-shaped tree of ``n_records`` records under ``root``.

    ``priors`` overrides concept probabilities (e.g. ``{"CLBBB": 0.1}``); ``noise`` is "default"
    (PTB-XL-like), None/"off" (noise-free, unit gain) or a :class:`NoiseConfig`; other ``options`` are
    :class:`SynthConfig` fields. ``workers=0`` uses every core.
    """
    config = SynthConfig.for_source("ptbxl", n_records, seed, priors=priors, noise=noise,
                                    sampling_rates=sampling_rates, workers=workers, progress=progress, **options)
    return generate(root, config)


def generate_g12ec(
    root: str | os.PathLike[str],
    n_records: int,
    seed: int = 0,
    *,
    workers: int = 0,
    progress: bool = True,
    priors: Mapping[str, float] | None = None,
    noise: NoiseConfig | str | None = "default",
    **options: Any,
) -> SynthSummary:
    """Write a G12EC-shaped tree of ``n_records`` records under ``root`` (see :func:`generate_ptbxl`)."""
    config = SynthConfig.for_source("g12ec", n_records, seed, priors=priors, noise=noise, workers=workers,
                                    progress=progress, **options)
    return generate(root, config)


def generate_cpsc(
    root: str | os.PathLike[str],
    n_records: int,
    seed: int = 0,
    *,
    dx_dialect: str = "abbreviation",
    workers: int = 0,
    progress: bool = True,
    priors: Mapping[str, float] | None = None,
    noise: NoiseConfig | str | None = "default",
    **options: Any,
) -> SynthSummary:
    """Write a CPSC 2018-shaped Challenge tree of ``n_records`` records under ``root``: ``#Dx:`` in the first
    release's abbreviations (``dx_dialect="abbreviation"``) or in SNOMED CT codes (``"snomed"``); ``priors``
    override class shares by abbreviation (``{"AF": 0.3}``); ``seconds`` is the longest record (default 60)."""
    config = SynthConfig.for_source(CPSC, n_records, seed, priors=priors, noise=noise, workers=workers,
                                    progress=progress, dx_dialect=dx_dialect, **options)
    return generate(root, config)
