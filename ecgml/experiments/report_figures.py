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
from ecgml.experiments.analysis import Datasets
from ecgml.experiments.schema import FINETUNE, PRETRAIN, STANDALONE

ARM_STYLE = {FINETUNE: {"lw": 2.4, "ls": "-", "marker": "o"}, STANDALONE: {"lw": 1.3, "ls": "-", "marker": "s"},
             PRETRAIN: {"lw": 1.3, "ls": "--", "marker": "^"}}


def reference_title(datasets: Datasets) -> str:
    """The title of the pretraining panel: tested on the source, not on the target."""
    return f"{datasets.source} pretraining\n({datasets.source} test split, not {datasets.target})"


def _grid(n: int, width: float, height: float) -> tuple[Any, np.ndarray]:
    plt = pyplot()
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def _reference_panel(ax: Any, reference: pd.DataFrame, x: str, datasets: Datasets, *, log_x: bool = False) -> None:
    """The pretraining backbones' AUC on the source's own test split, on an axis of its own.

    A backbone shared by every setting (the same run attached to each) is one point; backbones that change with
    the swept value (pretraining fraction, sampling rate) are drawn against it.
    """
    colours = {model: f"C{7 + i}" for i, model in enumerate(dict.fromkeys(reference["model"]))}
    for model, rows in reference.groupby("model", sort=False):
        runs = rows.drop_duplicates(subset=["mean", "ci_low", "ci_high"])
        mean = runs["mean"].to_numpy(dtype=float)
        err = np.vstack([mean - runs["ci_low"].to_numpy(dtype=float), runs["ci_high"].to_numpy(dtype=float) - mean])
        err = np.where(np.isfinite(err), err, 0)
        numeric = x in runs and pd.api.types.is_numeric_dtype(runs[x])
        if len(runs) > 1 and numeric:
            runs = runs.sort_values(x)
            ax.errorbar(runs[x].to_numpy(dtype=float), runs["mean"], yerr=err, capsize=3, color=colours[model],
                        label=model, **ARM_STYLE[PRETRAIN])
            ax.set_xlabel(x)
            if log_x:
                ax.set_xscale("log")
                ticks = sorted(runs[x].astype(float).unique())
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
                ax.minorticks_off()
        else:
            labels = [str(v) for v in runs[x]] if len(runs) > 1 and x in runs else ["backbone"]
            pos = np.arange(len(runs))
            ax.errorbar(pos, mean, yerr=err, fmt="^", capsize=4, color=colours[model], label=model, ms=7)
            for px, m in zip(pos, mean, strict=True):
                ax.annotate(f"{m:.3f}", (px, m), textcoords="offset points", xytext=(8, -3), fontsize=8)
            ax.set_xticks(pos, labels, fontsize=8)
            ax.set_xlim(-0.8, len(runs) - 0.2 + 0.8)
    ax.set_ylabel(f"{datasets.source} test macro AUC")
    ax.set_title(reference_title(datasets), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def plot_auc_lines(summary: pd.DataFrame, seeds: pd.DataFrame, x: str, path: Path, *, title: str = "",
                   panel: str | None = None, log_x: bool = False, reference: pd.DataFrame | None = None,
                   datasets: Datasets | None = None) -> Path:
    """Target macro AUC against a numeric swept value: one line per model (mean over seeds), bars = per-run CI
    envelope (``datasets``: the titles on the axes; default the study's source and target).

    ``summary`` has columns ``model, arm, <x>, mean, ci_low, ci_high`` (and ``panel`` when given); ``seeds``
    has ``model, <x>, test_macro_auc`` (one row per run) and is drawn as faint dots. ``reference`` (pretraining
    rows, tested on the source) gets a panel of its own: another dataset's test split does not belong on this axis.
    """
    datasets = datasets or Datasets.of()
    panels = [None] if panel is None else list(dict.fromkeys(summary[panel]))
    has_reference = reference is not None and len(reference) > 0
    fig, axes = _grid(len(panels) + has_reference, 5.2, 3.9)
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
        ax.set_ylabel(f"{datasets.target} test macro AUC")
        ax.grid(alpha=0.3)
        if value is not None:
            ax.set_title(f"{panel}={value}", fontsize=9)
        ax.legend(fontsize=7)
    if has_reference:
        assert reference is not None
        _reference_panel(axes.flat[len(panels)], reference, x, datasets, log_x=log_x)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_auc_bars_grouped(summary: pd.DataFrame, x: str, path: Path, *, title: str = "",
                          order: Sequence[Any] | None = None, reference: pd.DataFrame | None = None,
                          datasets: Datasets | None = None) -> Path:
    """Target macro AUC per categorical swept value (input domain, leads, strategy): bars per model, CI envelope.

    ``reference`` (pretraining on the source) is drawn in a panel of its own, as in :func:`plot_auc_lines`.
    """
    datasets = datasets or Datasets.of()
    plt = pyplot()
    values = list(order) if order is not None else list(dict.fromkeys(summary[x]))
    models = list(dict.fromkeys(summary["model"]))
    has_reference = reference is not None and len(reference) > 0
    width_main = max(5.0, 1.3 * len(values) * max(1, len(models)) / 2)
    fig, axes = plt.subplots(1, 1 + has_reference, figsize=(width_main + 3.2 * has_reference, 3.9), squeeze=False,
                             layout="constrained", width_ratios=[width_main, 3.2][: 1 + has_reference])
    ax = axes[0][0]
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
    ax.set_ylabel(f"{datasets.target} test macro AUC")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    if has_reference:
        assert reference is not None
        ref = reference.copy()
        ref[x] = pd.Categorical(ref[x], categories=values, ordered=True)
        _reference_panel(axes[0][1], ref.sort_values(x), x, datasets)
    fig.suptitle(title)
    return save_figure(fig, path)


def _text_colour(value: float, is_diff: bool, bound: float) -> str:
    """Black on light cells, white on dark ones (viridis is dark below about 0.55; RdBu at both ends)."""
    if not np.isfinite(value):
        return "black"
    if is_diff:
        return "white" if abs(value) > 0.6 * bound else "black"
    return "white" if value < 0.55 else "black"


def plot_class_heatmaps(matrices: dict[str, pd.DataFrame], path: Path, *, title: str = "",
                        diverging: Sequence[str] = ()) -> Path:
    """One heatmap per model: classes (rows) x settings (columns), cell = mean per-class test AUC over seeds.

    AUC panels use the full 0-1 scale (0.30 and 0.45 look different); panels named in ``diverging``
    (differences) use a red-blue scale centred on 0. Every cell is written out.
    """
    plt = pyplot()
    names = list(matrices)
    first = next(iter(matrices.values()))
    n_rows, n_cols = first.shape
    fig, axes = plt.subplots(1, len(names), figsize=(2.2 + (0.9 + 0.8 * n_cols) * len(names), 1.8 + 0.42 * n_rows),
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
            bound = 1.0
            image = ax.imshow(data, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            fmt = "{:.2f}"
        images.setdefault(is_diff, (image, []))[1].append(ax)
        for (i, j), v in np.ndenumerate(data):
            ax.text(j, i, "n/a" if not np.isfinite(v) else fmt.format(v), ha="center", va="center", fontsize=8,
                    color=_text_colour(v, is_diff, bound))
        ax.set_xticks(range(n_cols), [str(c) for c in m.columns], rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(n_rows), list(m.index) if ax is axes[0][0] else [""] * n_rows, fontsize=9)
        ax.set_title(name, fontsize=10)
    for is_diff, (image, group) in images.items():
        bar = fig.colorbar(image, ax=group, fraction=0.04 if not is_diff else 0.08, pad=0.02, shrink=0.7,
                           label="AUC difference" if is_diff else "test AUC (0-1)")
        bar.ax.tick_params(labelsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)
