"""PNG figures of the study report: AUC across a swept value (lines or grouped bars) and per-class heatmaps.

Drawn with matplotlib's Agg backend chosen inside each function (via :mod:`ecgml.evaluate.figures`), written
atomically; inputs are plain tables so the figures can be redrawn without MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgml.evaluate.figures import pyplot, save_figure

ARM_STYLE = {"finetune": {"lw": 2.4, "ls": "-", "marker": "o"}, "standalone": {"lw": 1.3, "ls": "-", "marker": "s"},
             "pretrain": {"lw": 1.3, "ls": "--", "marker": "^"}}


def _grid(n: int, width: float, height: float) -> tuple[Any, np.ndarray]:
    plt = pyplot()
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def plot_auc_lines(summary: pd.DataFrame, seeds: pd.DataFrame, x: str, path: Path, *, title: str = "",
                   panel: str | None = None, log_x: bool = False) -> Path:
    """Macro AUC against a numeric swept value: one line per model (mean over seeds), bars = per-run CI envelope.

    ``summary`` has columns ``model, arm, <x>, mean, ci_low, ci_high`` (and ``panel`` when given); ``seeds``
    has ``model, <x>, test_macro_auc`` (one row per run) and is drawn as faint dots.
    """
    panels = [None] if panel is None else list(dict.fromkeys(summary[panel]))
    fig, axes = _grid(len(panels), 5.2, 3.8)
    for ax, value in zip(axes.flat, panels, strict=False):
        part = summary if value is None else summary[summary[panel] == value]
        dots = seeds if value is None else seeds[seeds[panel] == value]
        for i, (model, rows) in enumerate(part.groupby("model", sort=False)):
            rows = rows.sort_values(x)
            style = ARM_STYLE.get(str(rows["arm"].iloc[0]), {})
            xs = rows[x].to_numpy(dtype=float)
            mean = rows["mean"].to_numpy(dtype=float)
            err = np.vstack([mean - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - mean])
            ax.errorbar(xs, mean, yerr=np.where(np.isfinite(err), err, 0), capsize=3, color=f"C{i}", label=model,
                        **style)
            d = dots[dots["model"] == model]
            ax.scatter(d[x].to_numpy(dtype=float), d["test_macro_auc"], s=8, color=f"C{i}", alpha=0.35, zorder=3)
        if log_x:
            ax.set_xscale("log")
            ticks = sorted(part[x].astype(float).unique())
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel(x)
        ax.set_ylabel("test macro AUC")
        ax.grid(alpha=0.3)
        if value is not None:
            ax.set_title(f"{panel}={value}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_auc_bars_grouped(summary: pd.DataFrame, x: str, path: Path, *, title: str = "",
                          order: Sequence[Any] | None = None) -> Path:
    """Macro AUC per categorical swept value (input domain, leads, strategy): bars per model, CI envelope."""
    plt = pyplot()
    values = list(order) if order is not None else list(dict.fromkeys(summary[x]))
    models = list(dict.fromkeys(summary["model"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(values) * max(1, len(models)) / 2), 3.8))
    width = 0.8 / max(1, len(models))
    centres = np.arange(len(values))
    for i, model in enumerate(models):
        rows = summary[summary["model"] == model].set_index(x).reindex(values)
        mean = rows["mean"].to_numpy(dtype=float)
        low = rows["ci_low"].to_numpy(dtype=float)
        high = rows["ci_high"].to_numpy(dtype=float)
        pos = centres - 0.4 + width * (i + 0.5)
        ax.bar(pos, np.nan_to_num(mean), width, color=f"C{i}", label=model)
        ok = np.isfinite(mean) & np.isfinite(low) & np.isfinite(high)
        ax.errorbar(pos[ok], mean[ok], yerr=[mean[ok] - low[ok], high[ok] - mean[ok]], fmt="none", ecolor="black",
                    capsize=2, lw=0.8)
    finite = summary[["ci_low", "mean"]].to_numpy(dtype=float)
    floor = np.nanmin(finite) if np.isfinite(finite).any() else 0.5
    ax.set_ylim(max(0.0, floor - 0.05), 1.0)
    ax.set_xticks(centres, [str(v) for v in values])
    ax.set_xlabel(x)
    ax.set_ylabel("test macro AUC")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_class_heatmaps(matrices: dict[str, pd.DataFrame], path: Path, *, title: str = "",
                        diverging: Sequence[str] = ()) -> Path:
    """One heatmap per model: classes (rows) x settings (columns), cell = mean per-class test AUC over seeds.

    Panels named in ``diverging`` (differences) use a red-blue scale centred on 0.
    """
    plt = pyplot()
    names = list(matrices)
    first = next(iter(matrices.values()))
    n_rows, n_cols = first.shape
    fig, axes = plt.subplots(1, len(names), figsize=(1.5 + (0.6 + 0.55 * n_cols) * len(names), 1.4 + 0.32 * n_rows),
                             squeeze=False, layout="constrained")
    images: dict[bool, tuple[Any, list[Any]]] = {}
    for ax, name in zip(axes[0], names, strict=True):
        m = matrices[name]
        data = m.to_numpy(dtype=float)
        is_diff = name in diverging
        if is_diff:
            bound = max(0.05, float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 0.05)
            image = ax.imshow(data, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
            fmt = "{:+.2f}"
        else:
            image = ax.imshow(data, cmap="viridis", vmin=0.5, vmax=1.0, aspect="auto")
            fmt = "{:.2f}"
        images.setdefault(is_diff, (image, []))[1].append(ax)
        for (i, j), v in np.ndenumerate(data):
            light = is_diff or not np.isfinite(v) or v > 0.8
            ax.text(j, i, "n/a" if not np.isfinite(v) else fmt.format(v), ha="center", va="center", fontsize=5.5,
                    color="black" if light else "white")
        ax.set_xticks(range(n_cols), [str(c) for c in m.columns], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(n_rows), list(m.index) if ax is axes[0][0] else [""] * n_rows, fontsize=7)
        ax.set_title(name, fontsize=8)
    for is_diff, (image, group) in images.items():
        bar = fig.colorbar(image, ax=group, fraction=0.04 if not is_diff else 0.08, pad=0.02, shrink=0.7,
                           label="AUC difference" if is_diff else "test AUC")
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)
