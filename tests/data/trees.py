"""Tiny dataset trees in the real formats, written with the project's own writers, for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ecgml.data.formats import write_wfdb_record
from ecgml.data.leads import STANDARD_LEADS

PTBXL_LEAD_NAMES = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
_STATEMENTS = """,description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass
NORM,normal ECG,1.0,,,NORM,NORM
LVH,left ventricular hypertrophy,1.0,,,HYP,LVH
1AVB,first degree AV block,1.0,,,CD,_AVB
SR,sinus rhythm,,,1.0,,
"""


def write_tiny_ptbxl(root: Path, n: int = 30, seed: int = 0, rates: tuple[int, ...] = (100,)) -> Path:
    """A PTB-XL-shaped tree of ``n`` random-walk records with labels cycling NORM / LVH / 1AVB."""
    rng = np.random.default_rng(seed)
    rows = []
    labels = ["{'NORM': 100.0, 'SR': 0.0}", "{'LVH': 100.0, 'SR': 0.0}", "{'1AVB': 80.0, 'SR': 0.0}"]
    for i in range(1, n + 1):
        base = np.cumsum(rng.normal(0, 0.02, (12, 5000)), axis=1).astype(np.float32)
        for fs in rates:
            folder = root / f"records{fs}" / "00000"
            folder.mkdir(parents=True, exist_ok=True)
            signal = base[:, :: 500 // fs]
            write_wfdb_record(folder, f"{i:05d}_{'lr' if fs == 100 else 'hr'}", signal, fs, PTBXL_LEAD_NAMES)
        rows.append({"ecg_id": i, "patient_id": float(1000 + i // 2), "age": 50.0, "sex": i % 2,
                     "scp_codes": labels[i % 3], "strat_fold": (i // 2) % 10 + 1,
                     "filename_lr": f"records100/00000/{i:05d}_lr",
                     "filename_hr": f"records500/00000/{i:05d}_hr"})
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    (root / "scp_statements.csv").write_text(_STATEMENTS)
    return root


__all__ = ["PTBXL_LEAD_NAMES", "STANDARD_LEADS", "write_tiny_ptbxl"]
