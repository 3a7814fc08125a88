"""The comparison a sweep's parent run carries: test macro AUC per swept value and model, mean and spread
over seeds, as a table and a chart, so the MLflow UI answers "did fine-tuning win, and where?" from the
sweep's own page, without running the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ecgml.experiments.schema import PRETRAIN


def _value(setting: dict[str, Any]) -> str:
    """The swept value a child ran at (``target_fraction=0.25``); settings of two keys read in key order."""
    return ", ".join(f"{k}={v}" for k, v in sorted(setting.items())) or "-"


def comparison_table(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (swept value, model): mean, standard deviation, min, max and count of test macro AUC
    over seeds. ``rows``: ``arm``, ``backbone``, ``setting`` (dict), ``seed``, ``test_macro_auc``."""
    frame = pd.DataFrame([{"setting": _value(r["setting"]), "model": f"{r['arm']} {r['backbone']}",
                           "seed": r["seed"], "test_macro_auc": r["test_macro_auc"]}
                          for r in rows if r["arm"] != PRETRAIN and not math.isnan(r["test_macro_auc"])])
    if frame.empty:
        return pd.DataFrame(columns=["setting", "model", "mean", "std", "min", "max", "seeds"])
    grouped = frame.groupby(["setting", "model"], sort=True)["test_macro_auc"]
    table = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index().rename(columns={"count": "seeds"})
    return table.round(4)


def plot_comparison(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Test macro AUC against the swept value, one line per model, error bars one standard deviation."""
    from ecgml.evaluate.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    settings: Sequence[str] = sorted(table["setting"].unique())
    for model, part in table.groupby("model", sort=True):
        part = part.set_index("setting").reindex(settings)
        ax.errorbar(range(len(settings)), part["mean"], yerr=part["std"].fillna(0), marker="o", capsize=3,
                    label=str(model))
    ax.set_xticks(range(len(settings)), settings, rotation=20, ha="right")
    ax.set_ylabel("test macro AUC (mean ± sd over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
