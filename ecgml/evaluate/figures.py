"""PNG figures of a run: learning curves, per-class ROC curves, per-class AUC bars with intervals.

Each function draws with matplotlib's Agg backend (chosen inside the function, not at import) and writes
its PNG atomically, returning the path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgml.io import atomic_path


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return Path(path)


def plot_learning_curves(history: Mapping[str, Sequence[float]], path: Path, title: str = "") -> Path:
    """One panel per metric (losses together, AUC apart), epochs on the x axis (numbered from 1)."""
    plt = pyplot()
    losses = {k: v for k, v in history.items() if k.endswith("loss")}
    others = {k: v for k, v in history.items() if not k.endswith("loss")}
    panels = [p for p in (losses, others) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for name, values in panel.items():
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path)


def _roc(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-p, kind="stable")
    y = y[order].astype(float)
    tps = np.concatenate([[0.0], np.cumsum(y)])
    fps = np.concatenate([[0.0], np.cumsum(1 - y)])
    return fps / max(fps[-1], 1), tps / max(tps[-1], 1)


def plot_roc_curves(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str], path: Path,
                    aucs: Sequence[float | None] | None = None) -> Path:
    """Small multiples: one ROC curve per class (classes without both outcomes say so)."""
    plt = pyplot()
    n = len(classes)
    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        y, p = np.asarray(y_true)[:, i], np.asarray(y_prob)[:, i]
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls="--")
        if 0 < y.sum() < len(y):
            fpr, tpr = _roc(y, p)
            ax.plot(fpr, tpr, lw=1.2)
            label = f"{classes[i]} ({aucs[i]:.3f})" if aucs is not None and aucs[i] is not None else classes[i]
        else:
            label = f"{classes[i]} (undefined)"
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=6)
    return save_figure(fig, path)


def plot_auc_bars(classes: Sequence[str], aucs: Sequence[float | None], path: Path,
                  low: Sequence[float] | None = None, high: Sequence[float] | None = None, title: str = "") -> Path:
    """Per-class AUC as bars, with bootstrap intervals when given; undefined classes are marked."""
    plt = pyplot()
    values = np.array([np.nan if a is None else a for a in aucs], dtype=float)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(classes)), 3.5))
    x = np.arange(len(classes))
    ax.bar(x, np.nan_to_num(values, nan=0.0), color=["C0" if np.isfinite(v) else "lightgrey" for v in values])
    if low is not None and high is not None:
        lo, hi = np.asarray(low, float), np.asarray(high, float)
        ok = np.isfinite(values) & np.isfinite(lo) & np.isfinite(hi)
        ax.errorbar(x[ok], values[ok], yerr=[values[ok] - lo[ok], hi[ok] - values[ok]], fmt="none", ecolor="black",
                    capsize=2, lw=0.8)
    for i in np.flatnonzero(~np.isfinite(values)):
        ax.text(i, 0.02, "n/a", ha="center", fontsize=7, rotation=90)
    ax.set_xticks(x, classes, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.axhline(0.5, color="grey", lw=0.5, ls="--")
    ax.set_ylabel("ROC AUC")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_reliability(y_true: np.ndarray, before: np.ndarray, after: np.ndarray | None, classes: Sequence[str],
                     path: Path, n_bins: int = 10, labels: tuple[str, str] = ("before", "after")) -> Path:
    """Reliability diagrams, one panel per class: observed frequency against mean predicted probability per bin.

    Bars on a log axis (right) give the records in each bin, so a point resting on three records is seen as such;
    each panel's title gives the class's ECE. Axes are labelled once for the whole figure; a constrained layout
    keeps titles clear of the ticks above.
    """
    from ecgml.evaluate.calibration import calibration_errors, reliability

    plt = pyplot()
    y = np.asarray(y_true)
    series = [(np.asarray(p), label, f"C{k}") for k, (p, label) in enumerate(zip((before, after), labels,
                                                                                 strict=True)) if p is not None]
    eces = [calibration_errors(y, p, n_bins)[0] for p, _, _ in series]
    n = len(classes)
    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.8 * rows), squeeze=False, layout="constrained")
    width = 0.9 / n_bins / max(1, len(series))
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        counts_ax = ax.twinx()
        top = 1
        for k, (probs, label, colour) in enumerate(series):
            r = reliability(y[:, i], probs[:, i], n_bins)
            used = r["count"] > 0
            ax.plot(r["confidence"][used], r["frequency"][used], marker="o", ms=3, lw=1.2, color=colour, label=label,
                    zorder=3)
            left = np.arange(n_bins) / n_bins + 0.05 / n_bins + k * width
            counts_ax.bar(left, r["count"], width=width, align="edge", color=colour, alpha=0.25, zorder=1)
            top = max(top, int(r["count"].max()))
        counts_ax.set_yscale("log")
        counts_ax.set_ylim(0.8, 0.8 * (top / 0.8) ** 3)  # bars fill the lower third: points stay readable
        counts_ax.tick_params(labelsize=6)
        if (i + 1) % cols and i != n - 1:
            counts_ax.set_yticklabels([])
        else:
            counts_ax.set_ylabel("records per bin (bars, log)", fontsize=7)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls="--", zorder=2)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_zorder(counts_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.tick_params(labelsize=7)
        ece = " → ".join(f"{e[i]:.3f}" for e in eces)
        ax.set_title(f"{classes[i]}  (ECE {ece})", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
    fig.supxlabel("mean predicted probability in the bin", fontsize=9)
    fig.supylabel("observed frequency of the class in the bin", fontsize=9)
    return save_figure(fig, path)
