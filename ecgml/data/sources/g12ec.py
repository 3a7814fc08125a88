"""Georgia 12-lead ECG Challenge database (G12EC): the ``E`` tranche of the Challenge collections, read by the
``cinc`` reader (:mod:`ecgml.data.sources.cinc`) with what is special about Georgia on top.

Special: its 18 classes shared with PTB-XL (a label map, not its own codes), the 2020 release's headers that
declare 4880/mV over data stored at 1000/mV, and its stored ten folds. The Challenge bundles other databases
beside Georgia; their ids (``HR`` = PTB-XL, ``A``/``Q`` = CPSC, ``S`` = PTB, ``I`` = St Petersburg, ``JS`` =
Chapman-Shaoxing/Ningbo) are refused unless asked for, so PTB-XL can never leak into fine-tuning.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ecgml.data.labels import DEFAULT_LABEL_MAP, SHARED_TASK, load_label_map
from ecgml.data.records import Dataset, RecordProblem, SplitSpec, summarize_problems
from ecgml.data.sources.cinc import (
    TRANCHES,
    UNKNOWN_TRANCHE,
    assign_folds,
    header_fields,
    parse_dx,
    tranche_of,
    tranche_title,
    walk_challenge_tree,
)
from ecgml.data.sources.common import read_version

__all__ = ["G12EC_FS", "G12EC_GAIN_CORRECTIONS", "foreign_database", "foreign_refusal", "header_fields",
           "parse_dx", "read_g12ec"]

G12EC_FS = 500
#: The 2020 Georgia release declares this gain in some headers; the data are stored at 1000/mV.
G12EC_GAIN_CORRECTIONS: dict[float, float] = {4880.0: 1000.0}
GEORGIA_TRANCHE = "E"
#: Record-id prefixes of the other Challenge databases, longest first so "JS" wins over "S".
FOREIGN_PREFIXES: dict[str, str] = {t.prefix: t.title for t in TRANCHES if t.prefix != GEORGIA_TRANCHE}
UNKNOWN_DATABASE = tranche_title(UNKNOWN_TRANCHE)


def foreign_database(record_id: str) -> str | None:
    """Name of the non-Georgia database a record id belongs to, or None for a Georgia id."""
    tranche = tranche_of(record_id)
    return None if tranche == GEORGIA_TRANCHE else tranche_title(tranche)


def foreign_refusal(where: str, record_id: str, database: str) -> str:
    """Why a foreign record is left out. No hint how to let it in: only some commands can (the CLI's data
    commands say their ``--allow-foreign`` flag themselves)."""
    what = f"a record of {database}" if database == UNKNOWN_DATABASE else f"a {database} record"
    return f"{where}: id {record_id!r} is {what}, not Georgia; refused"


def read_g12ec(
    root: str | os.PathLike[str],
    *,
    label_map: str = DEFAULT_LABEL_MAP,
    splits: SplitSpec | None = None,
    allow_foreign: bool = False,
    folds_path: Path | None = None,
    fold_seed: int = 0,
    rebuild_folds: bool = False,
    progress: bool = False,
) -> Dataset:
    """Read every ``*.hea`` under ``root`` (any depth) into a :class:`Dataset` on the shared classes.

    Problems are collected, not raised: a foreign or unreadable record, a missing signal file or a
    missing ``Dx`` line drops the record; duplicate and unknown SNOMED codes are reported and the record
    kept. Folds are built once (label-stratified, ``fold_seed``) and stored beside the data.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory; is it a G12EC tree?")
    lmap = load_label_map(label_map)

    def admit(record_id: str, where: str) -> RecordProblem | None:
        foreign = foreign_database(record_id)
        if foreign and not allow_foreign:
            return RecordProblem(record_id, where, "foreign_record", foreign_refusal(where, record_id, foreign))
        return None

    found = walk_challenge_tree(root, admit=admit, source="g12ec", progress=progress,
                                gain_corrections=G12EC_GAIN_CORRECTIONS)
    if not found.rows:
        raise ValueError(f"{root}: no usable G12EC record among {found.n_headers} header(s)"
                         + (f" ({summarize_problems(found.problems)})" if found.problems else ""))
    table = pd.DataFrame(found.rows).sort_values("record_id", kind="stable").reset_index(drop=True)
    table["labels"] = [lmap.from_snomed(codes) for codes in table["codes"]]
    foreign = [foreign_database(str(record_id)) for record_id in table["record_id"]]
    table["source"] = ["g12ec" if f is None else f"foreign:{f}" for f in foreign]
    table = assign_folds(root, table, n_folds=10, seed=fold_seed, rebuild=rebuild_folds, folds_path=folds_path)
    return Dataset(
        source="g12ec",
        root=root,
        version=read_version(root),
        fs=G12EC_FS,
        task=SHARED_TASK,
        label_map=label_map,
        classes=lmap.classes,
        records=table,
        problems=found.problems,
        splits=splits or SplitSpec(),
        gain_corrections=dict(G12EC_GAIN_CORRECTIONS),
    )
