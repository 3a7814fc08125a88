"""Challenge records: a MATLAB v4 ``val`` matrix beside a WFDB header, in the 2020 or 2021 dialect."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ecgml.data.formats.matv4 import write_matv4
from ecgml.data.formats.wfdb import WfdbHeader, build_header, format_header, to_digital
from ecgml.io import atomic_write_text


def write_challenge_record(
    directory: str | os.PathLike[str],
    record_name: str,
    signal_mv: np.ndarray,
    fs: float,
    lead_names: Sequence[str],
    *,
    comments: Sequence[str] = (),
    dialect: str = "2021",
    declared_gain: float | None = None,
) -> WfdbHeader:
    """Write a PhysioNet/CinC Challenge record: MATLAB v4 ``val`` (int16) plus a WFDB header.

    ``dialect="2021"`` writes ``E07500 12 500 5000`` and ``16x1+24 1000.0(0)/mV``; ``"2020"`` writes
    the first line naming ``E00009.mat`` and ``16+24 1000/mV``. ``declared_gain`` lets the 2020
    release's defect (a header saying 4880/mV over data stored at 1000/mV) be reproduced.
    """
    if dialect not in ("2020", "2021"):
        raise ValueError(f"dialect must be '2020' or '2021', not {dialect!r}")
    directory = Path(directory)
    gain = 1000.0
    digital = to_digital(signal_mv, gain)
    mat_name = f"{record_name}.mat"
    header = build_header(
        record_name if dialect == "2021" else mat_name,
        mat_name,
        digital,
        fs,
        lead_names,
        gain,
        fmt_text="16x1+24" if dialect == "2021" else "16+24",
        byte_offset=24,
        comments=comments,
        baseline_written=dialect == "2021",
        base_time_date="" if dialect == "2021" else "05-May-2020 14:50:55",
    )
    if declared_gain is not None:
        header = replace(header, signals=tuple(s._replace(gain=declared_gain) for s in header.signals))
    write_matv4(directory / mat_name, "val", digital)
    atomic_write_text(directory / f"{record_name}.hea", format_header(header))
    return header
